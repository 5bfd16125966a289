package agent

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// After a renewal an agent tells the peers of its live tunnels about its
// new certificate (cert.update), so they recheck those tunnels with it and
// keep them past the old certificate's expiry: live tunnels are never
// cut for an expiry that a renewal already took care of. The new key signs
// the tunnel's TLS keying material with the new certificate, so only the
// holder of the new key, on this very tunnel, can make the announcement.

// updateLabel is the TLS exporter label that binds an announcement to
// its tunnel.
const updateLabel = "EXPORTER-postern-cert-update"

// updateMessage is what the new key signs.
func updateMessage(t *tunnel.Tunnel, leafDER []byte) ([]byte, error) {
	cs := t.ConnectionState()
	ekm, err := cs.ExportKeyingMaterial(updateLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("tunnel keying material: %w", err)
	}
	msg := append([]byte("postern cert.update v1\x00"), ekm...)
	return append(msg, leafDER...), nil
}

// announceRenewal sends the new chain to the peer of every live tunnel,
// in the background.
func (a *Agent) announceRenewal(key crypto.Signer, chainPEM []byte, leaf *x509.Certificate) {
	for _, t := range a.liveTunnels() {
		go func() {
			payload, err := updatePayload(t, key, chainPEM, leaf)
			if err == nil {
				_, err = askPeer(t, wire.OpCertUpdate, payload)
			}
			if err != nil && !t.Closed() {
				a.log.Info("renewed certificate not announced to the peer; it rechecks this tunnel with the old one", "tunnel", tunnelName(t), "err", err.Error())
			}
		}()
	}
}

func updatePayload(t *tunnel.Tunnel, key crypto.Signer, chainPEM []byte, leaf *x509.Certificate) ([]byte, error) {
	msg, err := updateMessage(t, leaf.Raw)
	if err != nil {
		return nil, err
	}
	var sig []byte
	if _, ok := key.(ed25519.PrivateKey); ok {
		sig, err = key.Sign(rand.Reader, msg, crypto.Hash(0))
	} else {
		sum := sha256.Sum256(msg)
		sig, err = key.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
	if err != nil {
		return nil, fmt.Errorf("sign announcement: %w", err)
	}
	out := binary.BigEndian.AppendUint16(nil, uint16(len(sig)))
	out = append(out, sig...)
	return append(out, chainPEM...), nil
}

// maxUpdateChain bounds the certificates an announcement may carry.
const maxUpdateChain = 8

// parseUpdate splits an announcement into the signature and the chain,
// leaf first. It returns at least one certificate or an error.
func parseUpdate(payload []byte) (sig []byte, chain []*x509.Certificate, err error) {
	if len(payload) < 2 || int(binary.BigEndian.Uint16(payload)) > len(payload)-2 {
		return nil, nil, errors.New("announcement truncated")
	}
	n := int(binary.BigEndian.Uint16(payload))
	sig, rest := payload[2:2+n], payload[2+n:]
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, nil, fmt.Errorf("block %d is a %s, not a CERTIFICATE", len(chain)+1, block.Type)
		}
		if len(chain) == maxUpdateChain {
			return nil, nil, fmt.Errorf("more than %d certificates", maxUpdateChain)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("certificate %d does not parse: %v", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, nil, errors.New("no certificate in the announcement")
	}
	return sig, chain, nil
}

// answerCertUpdate takes a peer's renewed certificate for tunnel t.
func (a *Agent) answerCertUpdate(t *tunnel.Tunnel, payload []byte, log *slog.Logger) wire.ControlReply {
	chain, err := a.checkUpdate(t, payload)
	if err != nil {
		log.Info("peer's renewed certificate refused", "reason", err.Error())
		return wire.ControlReply{Code: wire.ControlRefused, Reason: err.Error()}
	}
	a.renew.setSuccessor(t, chain)
	log.Info("peer announced its renewed certificate; this tunnel is rechecked with it", "cert", trust.Subject(chain[0]),
		"serial", chain[0].SerialNumber.Text(16), "not_after", stamp(chain[0].NotAfter))
	return wire.ControlReply{Code: wire.ControlOK}
}

// checkUpdate verifies an announcement: signed by the new key over this
// tunnel, the same identities as the certificate the peer presented, and
// a chain this agent trusts now.
func (a *Agent) checkUpdate(t *tunnel.Tunnel, payload []byte) ([]*x509.Certificate, error) {
	sig, chain, err := parseUpdate(payload)
	if err != nil {
		return nil, err
	}
	if t.Peer == nil {
		return nil, errors.New("no peer certificate on this tunnel")
	}
	leaf := chain[0]
	msg, err := updateMessage(t, leaf.Raw)
	if err != nil {
		return nil, err
	}
	if err := checkSigned(leaf, msg, sig); err != nil {
		return nil, fmt.Errorf("not signed by the new certificate's key over this tunnel: %v", err)
	}
	if want, got := identity.NameIdentities(t.Peer), identity.NameIdentities(leaf); !slices.Equal(want, got) {
		return nil, fmt.Errorf("the certificate carries [%s], the tunnel's peer [%s]", strings.Join(got, ", "), strings.Join(want, ", "))
	}
	creds, side := a.tunnelCreds(t)
	if creds == nil {
		return nil, errors.New("this tunnel's endpoint is gone")
	}
	if err := creds.Recheck(chain, side, a.renew.now()); err != nil {
		return nil, fmt.Errorf("the certificate does not verify here: %v", err)
	}
	return chain, nil
}

// checkSigned verifies sig over msg with leaf's key, as updatePayload signs.
func checkSigned(leaf *x509.Certificate, msg, sig []byte) error {
	var algo x509.SignatureAlgorithm
	switch leaf.PublicKeyAlgorithm {
	case x509.Ed25519:
		algo = x509.PureEd25519
	case x509.ECDSA:
		algo = x509.ECDSAWithSHA256
	case x509.RSA:
		algo = x509.SHA256WithRSA
	default:
		return fmt.Errorf("unsupported key %v", leaf.PublicKeyAlgorithm)
	}
	return leaf.CheckSignature(algo, msg, sig)
}

// tunnelCreds are the credentials and side t was verified with.
func (a *Agent) tunnelCreds(t *tunnel.Tunnel) (*trust.Credentials, trust.Side) {
	if t.Name != "" {
		clients, _ := a.clientMaps()
		if c := clients[t.Name]; c != nil {
			return c.Creds, trust.SideClient
		}
		return nil, trust.SideClient
	}
	if creds := a.serverCredsOf(t); len(creds) > 0 {
		return creds[0], trust.SideServer
	}
	return nil, trust.SideServer
}
