// Package pki is the small private certificate authority behind
// `postern pki`: one CA per folder, for an operator's own sites and for B2B
// partners.
//
// # Folder layout
//
// A CA folder (default ./pki) holds:
//
//	ca.crt       the CA certificate (PEM). Give it to every agent as tls.ca.
//	ca.key       the CA private key (PEM, PKCS#8 "PRIVATE KEY", mode 0600).
//	             Keep it offline if you can; whoever holds it can mint peers.
//	index.json   every certificate this CA signed: serial, subject, the
//	             identities Postern matches, usage, validity, SHA-256.
//	revoked.json revoked serials with time and reason.
//	crlnumber    the number of the last CRL signed (decimal text), so CRL
//	             numbers only grow.
//	ca.crl       the current CRL (PEM "X509 CRL"). Give it to every agent
//	             as tls.crl and re-sign it (CRL) before its next update.
//	invitations/ one-time enrollment invitations (Invite, Redeem):
//	             ID.json (identities, expiry, validity, SHA-256 of the
//	             secret, and once used: when, by whom, the serial and the
//	             CSR) and ID.used, created exclusively by the redemption.
//	hub.crt      with `postern pki init --hub HOST:PORT` only: the hub's
//	hub.key      server certificate for HOST from this CA, its key (mode
//	hub.addr     0600), and HOST:PORT, the address `postern pki invite`
//	             puts in tokens when it is given no --hub.
//
// The folder is created 0700. Every file is replaced atomically (written to
// a temporary file, then renamed). To use a CA made elsewhere, put its ca.crt
// and ca.key in an empty folder; the other files are created as needed.
//
// # Keys and certificates
//
// Keys are ECDSA P-256 unless asked otherwise (see [KeyType]); private keys
// are written as PKCS#8 PEM with mode 0600. Serial numbers are random 128-bit
// integers. Leaf certificates are valid for 90 days by default and their
// NotBefore is set a few minutes in the past so peers with a slow clock
// accept them at once. The CA, not the request, decides a certificate's
// usage and validity: [CA.Sign] copies only the subject CN and OU and the
// DNS, IP and URI names from a certificate request.
//
// # Concurrency
//
// A *CA is safe for concurrent use by one process. Two processes must not
// change the same folder at the same time: there is no file lock. The
// exception is invitations: Invite writes a new file of its own and reads
// only ca.crt, and Redeem claims an invitation by creating ID.used
// exclusively, so `postern pki invite` is safe beside a running hub.
//
// Package pki imports only identity from Postern (for the identities and
// fingerprints it shows).
package pki
