package tests

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/elf"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
)

const svcPkgVersion = "1.2.3"

// `make package` (packaging/build.sh) builds every artifact; each holds
// what it should, where it should, with the right owners, modes, scripts
// and tables.
func TestPackages(t *testing.T) {
	svcNeed(t, "dpkg-deb", "rpm", "wixl", "msibuild", "msiinfo", "tar", "zip", "unzip", "sha256sum")
	dir := t.TempDir()
	dist := filepath.Join(dir, "dist")
	cmd := exec.Command("packaging/build.sh")
	cmd.Dir = svcRoot(t)
	cmd.Env = append(os.Environ(), "DIST="+dist, "VERSION=v"+svcPkgVersion)
	begin := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("packaging/build.sh: %v\n%s", err, out)
	}
	t.Logf("packaging/build.sh took %s", time.Since(begin).Round(time.Second))
	art := func(name string) string { return filepath.Join(dist, name) }
	v := svcPkgVersion

	t.Run("SHA256SUMS", func(t *testing.T) {
		sums, err := os.ReadFile(art("SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{
			"postern_" + v + "_linux_amd64.tar.gz", "postern_" + v + "_linux_arm64.tar.gz",
			"postern_" + v + "_windows_amd64.zip", "postern_" + v + "_amd64.deb", "postern_" + v + "_arm64.deb",
			"postern-" + v + "-1.x86_64.rpm", "postern-" + v + "-1.aarch64.rpm", "postern_" + v + "_windows_amd64.msi",
		} {
			if !regexp.MustCompile(`(?m)^[0-9a-f]{64}  ` + regexp.QuoteMeta(name) + `$`).Match(sums) {
				t.Errorf("SHA256SUMS lacks %s:\n%s", name, sums)
			}
		}
		c := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
		c.Dir = dist
		if out, err := c.CombinedOutput(); err != nil {
			t.Errorf("sha256sum --check: %v\n%s", err, out)
		}
	})

	t.Run("deb", func(t *testing.T) {
		deb := art("postern_" + v + "_amd64.deb")
		info := svcMust(t, time.Minute, nil, "dpkg-deb", "--info", deb)
		for _, want := range []string{"Package: postern\n", "Version: " + v + "-1\n", "Architecture: amd64\n",
			" preinst ", " postinst ", " prerm ", " postrm ", " conffiles "} {
			if !strings.Contains(info, want) {
				t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
			}
		}
		if conffiles := svcMust(t, time.Minute, nil, "dpkg-deb", "--info", deb, "conffiles"); strings.TrimSpace(conffiles) != "/etc/postern/postern.toml" {
			t.Errorf("conffiles: %q, want only /etc/postern/postern.toml", conffiles)
		}
		contents := svcMust(t, time.Minute, nil, "dpkg-deb", "--contents", deb)
		for _, want := range []string{
			`-rwxr-xr-x root/root .* \./usr/bin/postern$`,
			`drwxr-x--- root/postern .* \./etc/postern/$`,
			`-rw-r----- root/postern .* \./etc/postern/postern\.toml$`,
			`-rw-r--r-- root/root .* \./lib/systemd/system/postern\.service$`,
			`-rw-r--r-- root/root .* \./lib/systemd/system/postern@\.service$`,
			`-rw-r--r-- root/root .* \./usr/share/doc/postern/install\.md$`,
			`-rw-r--r-- root/root .* \./usr/share/doc/postern/README\.md$`,
			`-rw-r--r-- root/root .* \./usr/share/doc/postern/certificates\.md$`,
		} {
			if !regexp.MustCompile(`(?m)^` + want).MatchString(contents) {
				t.Errorf("dpkg-deb --contents has no line matching %q:\n%s", want, contents)
			}
		}
		// The postinst neither enables nor starts the service.
		postinst := svcMust(t, time.Minute, nil, "dpkg-deb", "--info", deb, "postinst")
		code := regexp.MustCompile(`(?s)<<'MSG'.*?\nMSG\n`).ReplaceAllString(postinst, "") // the hint it prints
		if regexp.MustCompile(`systemctl (enable|start|restart|reenable) `).MatchString(code) {
			t.Errorf("postinst enables or starts the service:\n%s", postinst)
		}
		arm := art("postern_" + v + "_arm64.deb")
		if info := svcMust(t, time.Minute, nil, "dpkg-deb", "--field", arm, "Architecture"); strings.TrimSpace(info) != "arm64" {
			t.Errorf("arm64 deb Architecture: %q", info)
		}
		root := filepath.Join(dir, "arm64-deb")
		svcMust(t, time.Minute, nil, "dpkg-deb", "-x", arm, root)
		if m := svcELFMachine(t, filepath.Join(root, "usr/bin/postern")); m != elf.EM_AARCH64 {
			t.Errorf("arm64 deb carries a %v binary", m)
		}
	})

	t.Run("deb binary runs version and check on the example config", func(t *testing.T) {
		root := filepath.Join(dir, "amd64-deb")
		svcMust(t, time.Minute, nil, "dpkg-deb", "-x", art("postern_"+v+"_amd64.deb"), root)
		bin := filepath.Join(root, "usr/bin/postern")
		if out := svcMust(t, time.Minute, nil, bin, "version"); !strings.HasPrefix(out, "postern v"+v+" (") {
			t.Errorf("postern version: %q, want the stamped v%s", out, v)
		}
		example := filepath.Join(root, "etc/postern/postern.toml")
		if _, err := config.Load(example); err != nil {
			t.Fatalf("the shipped example config does not load: %v", err)
		}
		// With the certificates it names in place, check passes.
		ca := testca.New(t, "Example CA")
		leaf := ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.example.com"}})
		certs := filepath.Join(root, "etc/postern/certs")
		if err := os.MkdirAll(certs, 0o755); err != nil {
			t.Fatal(err)
		}
		testca.WriteFile(t, filepath.Join(certs, "site-a.crt"), leaf.CertPEM)
		testca.WriteFile(t, filepath.Join(certs, "site-a.key"), leaf.KeyPEM)
		testca.WriteFile(t, filepath.Join(certs, "ca.crt"), ca.PEM)
		out, err := svcRun(t, time.Minute, nil, bin, "check", "-c", example)
		if strings.Contains(out, "not available in this build") {
			t.Logf("postern check is not in this build yet; the config loaded above with the config package:\n%s", out)
			return
		}
		if err != nil {
			t.Errorf("postern check -c %s: %v\n%s", example, err, out)
		}
	})

	t.Run("deb preinst creates the postern account", func(t *testing.T) {
		svcNeed(t, "unshare")
		svcNeedRoot(t)
		scripts := filepath.Join(dir, "deb-control")
		svcMust(t, time.Minute, nil, "dpkg-deb", "--control", art("postern_"+v+"_amd64.deb"), scripts)
		// In a private mount namespace, over a copy of /etc (and /var/log,
		// which useradd may write), so this host keeps its accounts.
		etc := filepath.Join(dir, "etc")
		script := `set -e
cp -a /etc "$ETC"
mount --bind "$ETC" /etc
mount -t tmpfs tmpfs /var/log
mount -t tmpfs tmpfs /run
sh "$SCRIPTS/preinst" install
sh "$SCRIPTS/preinst" upgrade 1.2.2-1
sh "$SCRIPTS/postinst" configure
`
		out := svcMust(t, time.Minute, []string{"ETC=" + etc, "SCRIPTS=" + scripts},
			"unshare", "--mount", "--propagation", "private", "sh", "-c", script)
		passwd, _ := os.ReadFile(filepath.Join(etc, "passwd"))
		group, _ := os.ReadFile(filepath.Join(etc, "group"))
		users := regexp.MustCompile(`(?m)^postern:x:\d+:\d+:[^:]*:/nonexistent:/(usr/)?sbin/nologin$`).FindAll(passwd, -1)
		if len(users) != 1 {
			t.Errorf("postern accounts in passwd: %d, want 1 (preinst ran twice):\n%s", len(users), passwd)
		}
		if n := len(regexp.MustCompile(`(?m)^postern:x:\d+:`).FindAll(group, -1)); n != 1 {
			t.Errorf("postern groups: %d, want 1", n)
		}
		if !strings.Contains(out, "systemctl enable --now postern") {
			t.Errorf("postinst on a fresh install does not say how to start the service:\n%s", out)
		}
	})

	t.Run("rpm", func(t *testing.T) {
		rpm := art("postern-" + v + "-1.x86_64.rpm")
		files := svcMust(t, time.Minute, nil, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME}\n]`, rpm)
		for _, want := range []string{
			"/usr/bin/postern  -rwxr-xr-x root root",
			"/etc/postern  drwxr-x--- root postern",
			"/etc/postern/postern.toml cn -rw-r----- root postern",
			"/usr/lib/systemd/system/postern.service  -rw-r--r-- root root",
			"/usr/lib/systemd/system/postern@.service  -rw-r--r-- root root",
			"/usr/share/doc/postern/install.md",
			"/usr/share/doc/postern/README.md",
			"/usr/share/doc/postern/certificates.md",
		} {
			if !strings.Contains(files, want) {
				t.Errorf("rpm files lack %q:\n%s", want, files)
			}
		}
		list := svcMust(t, time.Minute, nil, "rpm", "-qpl", rpm)
		if !strings.Contains(list, "/usr/bin/postern\n") {
			t.Errorf("rpm -qpl:\n%s", list)
		}
		scripts := svcMust(t, time.Minute, nil, "rpm", "-qp", "--scripts", rpm)
		for _, want := range []string{"preinstall scriptlet", "useradd --system", "postinstall scriptlet",
			"preuninstall scriptlet", "systemctl disable --now postern.service", "postuninstall scriptlet"} {
			if !strings.Contains(scripts, want) {
				t.Errorf("rpm --scripts lacks %q:\n%s", want, scripts)
			}
		}
		info := svcMust(t, time.Minute, nil, "rpm", "-qp", "--qf", `%{NAME} %{VERSION} %{RELEASE} %{ARCH}`, rpm)
		if info != "postern "+v+" 1 x86_64" {
			t.Errorf("rpm header: %q", info)
		}
		if arch := svcMust(t, time.Minute, nil, "rpm", "-qp", "--qf", `%{ARCH}`, art("postern-"+v+"-1.aarch64.rpm")); arch != "aarch64" {
			t.Errorf("arm64 rpm ARCH: %q", arch)
		}
	})

	t.Run("msi", func(t *testing.T) {
		msi := art("postern_" + v + "_windows_amd64.msi")
		table := func(name string) string {
			return strings.ReplaceAll(svcMust(t, time.Minute, nil, "msiinfo", "export", msi, name), "\r\n", "\n")
		}
		checks := []struct{ table, want string }{
			{"ServiceInstall", "PosternService\tpostern\tPostern tunnel\t16\t2\t1\t\t\tLocalSystem\t\t" +
				`run -c "[CommonAppDataFolder]Postern\postern.toml" --service postern` + "\tBinary\t"},
			// Events 2|32|128: stop on install and uninstall, delete on
			// uninstall, never start (the example config has no certificates).
			{"ServiceControl", "PosternService\tpostern\t162\t\t1\tBinary"},
			{"Registry", "SYSTEM\\CurrentControlSet\\Services\\EventLog\\Application\\postern\\\tEventMessageFile\t#%%SystemRoot%\\System32\\EventCreate.exe\tBinary"},
			{"Registry", "\tTypesSupported\t#7\tBinary"},
			{"Component", "Config\t{39B23056-762F-40A9-B91E-FC3174874A46}\tCONFIGDIR\t400\t"}, // 64-bit, permanent, never overwrite
			{"CustomAction", "ConfigureService\t3090\tPosternExe\tservice configure --name postern"},
			{"CustomAction", "StartAfterUpgrade\t3154\tPosternExe\tservice start --name postern"},
			{"InstallExecuteSequence", "StartAfterUpgrade\tWIX_UPGRADE_DETECTED AND NOT REMOVE\t"},
			{"Upgrade", "{B1850495-7AFE-45F3-BCCF-B9E34FF4C0D0}\t\t" + v + "\t\t513\t\tWIX_UPGRADE_DETECTED"},
			{"Property", "ProductVersion\t" + v + "\n"},
			{"File", "PosternExe\tBinary\tpostern.exe\t"},
			{"File", "InstallDoc\tDocs\tinstall.md\t"},
			{"File", "ReadmeDoc\tDocs\tREADME.md\t"},
			{"File", "CertificatesDoc\tDocs\tcertificates.md\t"},
		}
		for _, c := range checks {
			if got := table(c.table); !strings.Contains(got, c.want) {
				t.Errorf("MSI table %s lacks %q:\n%s", c.table, c.want, got)
			}
		}
	})

	t.Run("archives", func(t *testing.T) {
		for _, arch := range []string{"amd64", "arm64"} {
			base := "postern_" + v + "_linux_" + arch
			list := svcMust(t, time.Minute, nil, "tar", "-tzvf", art(base+".tar.gz"))
			for _, f := range []string{"postern", "postern.toml", "postern.service", "postern@.service", "install.md", "README.md", "certificates.md"} {
				if !regexp.MustCompile(`(?m) ` + regexp.QuoteMeta(base+"/"+f) + `$`).MatchString(list) {
					t.Errorf("%s.tar.gz lacks %s:\n%s", base, f, list)
				}
			}
			if !regexp.MustCompile(`(?m)^-rwxr-xr-x root/root .* ` + regexp.QuoteMeta(base+"/postern") + `$`).MatchString(list) {
				t.Errorf("%s.tar.gz: postern not an executable owned by root:\n%s", base, list)
			}
		}
		base := "postern_" + v + "_windows_amd64"
		list := svcMust(t, time.Minute, nil, "unzip", "-l", art(base+".zip"))
		for _, f := range []string{"postern.exe", "postern.toml", "install.md", "README.md", "certificates.md"} {
			if !strings.Contains(list, base+"/"+f) {
				t.Errorf("%s.zip lacks %s:\n%s", base, f, list)
			}
		}
	})
}

// With a code-signing certificate, build.sh signs postern.exe and the MSI
// (osslsigncode), and both signatures verify against that certificate.
func TestPackageSigning(t *testing.T) {
	svcNeed(t, "wixl", "msibuild", "msiextract", "osslsigncode")
	dir := t.TempDir()
	cert, key := svcCodeSigningCert(t, dir)
	dist := filepath.Join(dir, "dist")
	cmd := exec.Command("packaging/build.sh", "msi")
	cmd.Dir = svcRoot(t)
	cmd.Env = append(os.Environ(), "DIST="+dist, "VERSION=v"+svcPkgVersion, "SIGN_CERT="+cert, "SIGN_KEY="+key)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("packaging/build.sh msi: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "signed postern.exe") || !strings.Contains(string(out), "signed postern_"+svcPkgVersion+"_windows_amd64.msi") {
		t.Errorf("build.sh did not report both signatures:\n%s", out)
	}
	msi := filepath.Join(dist, "postern_"+svcPkgVersion+"_windows_amd64.msi")
	extracted := filepath.Join(dir, "extracted")
	svcMust(t, time.Minute, nil, "msiextract", "-C", extracted, msi)
	var exes []string
	filepath.Walk(extracted, func(p string, _ os.FileInfo, _ error) error {
		if filepath.Base(p) == "postern.exe" {
			exes = append(exes, p)
		}
		return nil
	})
	if len(exes) != 1 {
		t.Fatalf("found %d postern.exe in the MSI, want 1", len(exes))
	}
	for _, f := range []string{msi, exes[0]} {
		out, err := svcRun(t, time.Minute, nil, "osslsigncode", "verify", "-CAfile", cert, "-in", f)
		if err != nil || !strings.Contains(out, "Signature verification: ok") {
			t.Errorf("osslsigncode verify %s: %v\n%s", filepath.Base(f), err, out)
		}
	}
	// And an unsigned build's MSI carries no signature.
	unsigned := svcBuildMSI(t, dir, "v"+svcPkgVersion)
	if out, err := svcRun(t, time.Minute, nil, "osslsigncode", "verify", "-CAfile", cert, "-in", unsigned); err == nil {
		t.Errorf("unsigned MSI verifies:\n%s", out)
	}
}

// svcCodeSigningCert writes a self-signed code-signing certificate and its
// key as PEM files.
func svcCodeSigningCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "Postern Test Code Signing", Organization: []string{"Postern"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "sign.crt"), filepath.Join(dir, "sign.key")
	testca.WriteFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	testca.WriteFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))
	return certFile, keyFile
}

func svcELFMachine(t *testing.T, path string) elf.Machine {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return f.Machine
}
