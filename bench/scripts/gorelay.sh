#!/usr/bin/env bash
# Runs bench/cmd/gorelay (the simplest Go TLS relay, a reference point) where
# bench/scripts/pair.sh runs a Postern binary: pair.sh calls
#   BIN run -c WORK/postern-server.toml   (or postern-client.toml)
# and this starts the matching gorelay end on the same certificates, target
# and front address, on the route pair.sh measures (PAIR_SVC: pg or http).
#
#   go build -o bench/.bin/gorelay ./bench/cmd/gorelay
#   bench/scripts/pair.sh /tmp/pw bench/scripts/gorelay.sh bench/.bin/postern 5 pgbench 1
#
# GOMAXPROCS in the environment reaches gorelay as usual.
set -euo pipefail
conf=${3:?usage: gorelay.sh run -c WORK/postern-server.toml or WORK/postern-client.toml}
w=$(dirname "$conf")
svc=${PAIR_SVC:-pg}
bin=$(cd "$(dirname "$0")/.." && pwd)/.bin/gorelay
if [ ! -x "$bin" ]; then
	echo "gorelay.sh: $bin missing: go build -o bench/.bin/gorelay ./bench/cmd/gorelay" >&2
	exit 1
fi
relay=127.0.0.1:${GORELAY_PORT:-44796}
if [[ $(basename "$conf") == *server* ]]; then
	target=$(grep -A1 "name = \"$svc\"" "$conf" | sed -n 's/^target = "\(.*\)"/\1/p')
	exec "$bin" -mode server -listen "$relay" -connect "$target" \
		-cert "$w/server.crt" -key "$w/server.key" -ca "$w/ca/ca.crt"
fi
front=$(grep -B2 "service = \"$svc\"" "$conf" | sed -n 's/^listen = "\(.*\)"/\1/p')
exec "$bin" -mode client -listen "$front" -connect "$relay" -servername bench-server \
	-cert "$w/client.crt" -key "$w/client.key" -ca "$w/ca/ca.crt"
