#!/usr/bin/env bash
# Builds Postern's release artifacts into $DIST (`make package` runs it):
#
#   postern_V_linux_amd64.tar.gz  postern_V_linux_arm64.tar.gz  postern_V_windows_amd64.zip
#   postern_V_amd64.deb           postern_V_arm64.deb           (nfpm)
#   postern-V-1.x86_64.rpm        postern-V-1.aarch64.rpm       (nfpm)
#   postern_V_windows_amd64.msi                                 (wixl)
#   SHA256SUMS
#
# usage: packaging/build.sh [archives] [deb] [rpm] [msi]     (default: all)
#
# Environment:
#   VERSION   version stamped into the binary (default: git describe);
#             the package version V is derived from it (see versions below)
#   DIST      output folder (default: dist)
#   GO        go command (default: go)
#   SIGN_PKCS12 [SIGN_PASSWORD_FILE], or SIGN_CERT and SIGN_KEY (PEM):
#             Authenticode-sign postern.exe and the MSI with osslsigncode
#   SIGN_TIMESTAMP_URL  optional RFC 3161 timestamp server for the signature
#   PKCS11=1  build the Linux binary of the host's arch with cgo, so that it
#             can use keys in PKCS#11 tokens (it then needs the build host's
#             glibc or newer); by default every binary is CGO_ENABLED=0 and
#             refuses pkcs11: keys with a clear error
#
# Needs: go, tar, zip, wixl and msibuild (Debian: wixl, msitools), and
# osslsigncode when signing. nfpm is run with `go run` at a pinned version
# (newer ones do not resolve here).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
DIST=${DIST:-dist}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
NFPM_VERSION=v2.45.2
# The documentation every artifact carries (the .deb and .rpm list theirs in
# nfpm.yaml): installing, the README, and certificates with the error
# reference.
DOCS=(docs/install.md README.md docs/certificates.md)

# versions sets PKG_VERSION (deb/rpm/archives) and MSI_VERSION (numeric
# major.minor.build) from VERSION:
#   v1.2.3            -> 1.2.3                  1.2.3
#   v1.2.3-4-gabcdef  -> 1.2.3+4.gabcdef        1.2.3
#   abcdef (no tag)   -> 0.0.N+abcdef           0.0.N   (N: commits in HEAD)
# Rebuilds of one MSI version replace each other on install (see msi).
versions() {
	local v=${VERSION#v} base rest
	if [[ $v =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)(.*)$ ]]; then
		base="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
		rest=${BASH_REMATCH[4]#[-+.]}
	else
		base="0.0.$(git rev-list --count HEAD 2>/dev/null || echo 0)"
		rest=$v
	fi
	rest=${rest//[^A-Za-z0-9.]/.}
	PKG_VERSION=$base${rest:++$rest}
	MSI_VERSION=$base
}

build() { # GOOS GOARCH -> $WORK/GOOS_GOARCH/postern[.exe]
	local exe=postern
	[ "$1" = windows ] && exe=postern.exe
	mkdir -p "$WORK/$1_$2"
	# PKCS#11 keys need cgo; a cgo binary links glibc dynamically, so it is
	# built only when asked for, and only for the host's own Linux arch.
	local cgo=0
	if [ "${PKCS11:-0}" = 1 ] && [ "$1" = linux ] && [ "$2" = "$("$GO" env GOHOSTARCH)" ]; then
		cgo=1
	fi
	CGO_ENABLED=$cgo GOOS=$1 GOARCH=$2 "$GO" build -trimpath \
		-ldflags "-s -w -X main.version=$VERSION" -o "$WORK/$1_$2/$exe" ./cmd/postern
	[ "$1" = windows ] && sign "$WORK/$1_$2/$exe"
	return 0
}

sign() { # FILE: Authenticode signature, when a signing certificate is given
	[ -n "${SIGN_PKCS12:-}${SIGN_CERT:-}" ] || return 0
	local args=(sign -h sha256 -n Postern -i https://github.com/postern-tunnel/postern)
	if [ -n "${SIGN_PKCS12:-}" ]; then
		args+=(-pkcs12 "$SIGN_PKCS12")
		[ -n "${SIGN_PASSWORD_FILE:-}" ] && args+=(-readpass "$SIGN_PASSWORD_FILE")
	else
		args+=(-certs "$SIGN_CERT" -key "$SIGN_KEY")
	fi
	[ -n "${SIGN_TIMESTAMP_URL:-}" ] && args+=(-ts "$SIGN_TIMESTAMP_URL")
	rm -f "$1.signed"
	osslsigncode "${args[@]}" -in "$1" -out "$1.signed" >/dev/null
	mv "$1.signed" "$1"
	echo "signed $(basename "$1")"
}

archives() {
	local arch dir
	for arch in amd64 arm64; do
		build linux $arch
		dir=postern_${PKG_VERSION}_linux_$arch
		mkdir -p "$WORK/$dir"
		cp "$WORK/linux_$arch/postern" packaging/postern.toml packaging/systemd/postern.service \
			packaging/systemd/postern@.service "${DOCS[@]}" "$WORK/$dir/"
		tar -C "$WORK" --owner=0 --group=0 -czf "$DIST/$dir.tar.gz" "$dir"
		echo "built $DIST/$dir.tar.gz"
	done
	build windows amd64
	dir=postern_${PKG_VERSION}_windows_amd64
	mkdir -p "$WORK/$dir"
	cp "$WORK/windows_amd64/postern.exe" packaging/postern.toml "${DOCS[@]}" "$WORK/$dir/"
	rm -f "$DIST/$dir.zip"
	(cd "$WORK" && zip -qr "$DIST/$dir.zip" "$dir")
	echo "built $DIST/$dir.zip"
}

nfpm() { # deb|rpm
	local arch out
	for arch in amd64 arm64; do
		[ -x "$WORK/linux_$arch/postern" ] || build linux $arch
		case $1-$arch in
		deb-*) out=postern_${PKG_VERSION}_$arch.deb ;;
		rpm-amd64) out=postern-${PKG_VERSION}-1.x86_64.rpm ;;
		rpm-arm64) out=postern-${PKG_VERSION}-1.aarch64.rpm ;;
		esac
		PKG_ARCH=$arch BIN="$WORK/linux_$arch/postern" PKG_VERSION=$PKG_VERSION \
			"$GO" run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" package \
			--config packaging/nfpm.yaml --packager "$1" --target "$DIST/$out" >/dev/null
		echo "built $DIST/$out"
	done
}

msi() {
	local out=$DIST/postern_${PKG_VERSION}_windows_amd64.msi
	[ -x "$WORK/windows_amd64/postern.exe" ] || build windows amd64
	rm -f "$out"
	# wixl takes only relative source paths.
	mkdir -p "$WORK/msi"
	cp "$WORK/windows_amd64/postern.exe" packaging/postern.toml "${DOCS[@]}" "$WORK/msi/"
	(cd "$WORK/msi" && wixl -a x64 -D "Version=$MSI_VERSION" -D Exe=postern.exe -D Config=postern.toml \
		-D Docs=install.md -D Readme=README.md -D CertDocs=certificates.md -o "$out" "$OLDPWD/packaging/windows/postern.wxs")
	# What wixl cannot write from the .wxs:
	# - the config is Permanent and NeverOverwrite (256|16|128): an upgrade
	#   or uninstall keeps the user's edited file;
	# - EventMessageFile is REG_EXPAND_SZ ("#%" prefix; wixl writes REG_SZ);
	# - VersionMaxInclusive (1|512) on the upgrade row: a rebuild of the same
	#   version replaces the installed one instead of installing beside it
	#   (Attributes is part of the key: delete and insert, not update).
	msibuild "$out" -q "UPDATE \`Component\` SET \`Attributes\` = 400 WHERE \`Component\` = 'Config'"
	msibuild "$out" -q "UPDATE \`Registry\` SET \`Value\` = '#%%SystemRoot%\\System32\\EventCreate.exe' WHERE \`Name\` = 'EventMessageFile'"
	local code
	code=$(sed -n 's/.*UpgradeCode="\([^"]*\)".*/\1/p' packaging/windows/postern.wxs)
	msibuild "$out" -q "DELETE FROM \`Upgrade\` WHERE \`ActionProperty\` = 'WIX_UPGRADE_DETECTED'"
	msibuild "$out" -q "INSERT INTO \`Upgrade\` (\`UpgradeCode\`, \`VersionMax\`, \`Attributes\`, \`ActionProperty\`) VALUES ('{$code}', '$MSI_VERSION', 513, 'WIX_UPGRADE_DETECTED')"
	sign "$out"
	echo "built $out"
}

sums() { # of every artifact in DIST, this build's and earlier ones'
	(
		cd "$DIST"
		shopt -s nullglob
		files=(*.tar.gz *.zip *.deb *.rpm *.msi)
		rm -f SHA256SUMS
		[ ${#files[@]} -eq 0 ] || sha256sum -- "${files[@]}" >SHA256SUMS
	)
	echo "built $DIST/SHA256SUMS"
}

versions
mkdir -p "$DIST"
DIST=$(cd "$DIST" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "postern $VERSION: packages $PKG_VERSION, MSI $MSI_VERSION"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(archives deb rpm msi)
for t in "${targets[@]}"; do
	case $t in
	archives | msi) $t ;;
	deb | rpm) nfpm "$t" ;;
	*) echo "build.sh: unknown artifact $t (archives, deb, rpm, msi)" >&2; exit 2 ;;
	esac
done
sums
