#!/bin/sh
# Runs after the files are unpacked (deb: postinst configure; rpm: %post).
# The service is not enabled or started: the example config has no
# certificates yet. On upgrade, running agents restart on the new binary.
set -e
# Files unpacked before the group existed on some systems: make sure.
chgrp postern /etc/postern /etc/postern/postern.toml 2>/dev/null || true

upgrade=false
case "$1" in
	configure) if [ -n "$2" ]; then upgrade=true; fi ;; # deb: $2 is the old version
	[0-9]*) if [ "$1" -gt 1 ]; then upgrade=true; fi ;; # rpm: $1 is the count of installed versions
esac

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if $upgrade; then
		systemctl try-restart postern.service 'postern@*.service' >/dev/null 2>&1 || true
	fi
fi

if ! $upgrade; then
	cat <<'MSG'
postern: edit /etc/postern/postern.toml (certificates in /etc/postern/certs,
readable by group postern), check it with
    postern check -c /etc/postern/postern.toml
then start the service:
    systemctl enable --now postern
More agents on this host: /etc/postern/NAME.toml and postern@NAME.service.
MSG
fi
exit 0
