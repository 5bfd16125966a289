#!/bin/sh
# Runs before the files are removed (deb: prerm remove|upgrade; rpm: %preun).
# On removal, stop and disable the packaged units; on upgrade, leave them
# running (postinstall restarts them on the new binary).
set -e
remove=false
case "$1" in
	remove) remove=true ;; # deb
	0) remove=true ;;      # rpm: no version left after this
esac
if $remove && [ -d /run/systemd/system ]; then
	systemctl disable --now postern.service >/dev/null 2>&1 || true
	for unit in $(systemctl list-units --all --plain --no-legend 'postern@*.service' 2>/dev/null | awk '{print $1}'); do
		systemctl disable --now "$unit" >/dev/null 2>&1 || true
	done
fi
exit 0
