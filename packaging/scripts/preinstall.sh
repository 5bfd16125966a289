#!/bin/sh
# Runs before the files are unpacked (deb: preinst install|upgrade; rpm: %pre):
# the postern system account must exist so /etc/postern can belong to its group.
set -e
if ! getent group postern >/dev/null 2>&1; then
	groupadd --system postern
fi
if ! getent passwd postern >/dev/null 2>&1; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	useradd --system --gid postern --home-dir /nonexistent --no-create-home \
		--shell "$nologin" --comment "Postern tunnel agent" postern
fi
exit 0
