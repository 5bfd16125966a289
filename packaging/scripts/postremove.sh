#!/bin/sh
# Runs after the files are removed (deb: postrm remove|purge|upgrade; rpm: %postun).
# The postern account stays (files may still belong to it; Debian policy).
# dpkg deletes the config on purge; rpm keeps an edited one as .rpmsave.
# Certificates and keys in /etc/postern are never deleted here.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = "purge" ]; then
	rmdir /etc/postern 2>/dev/null || true
fi
exit 0
