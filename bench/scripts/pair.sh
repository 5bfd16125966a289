#!/usr/bin/env bash
# Paired A/B of two Postern binaries (or settings) on one load, with
# stunnel in the same rounds: the measurement behind the paired figures in
# docs/performance.md. Binaries alternate round by round; each round starts
# fresh agents from a pbench work folder and prints throughput, CPU per
# request of both tunnel ends (utime + stime from /proc/PID/stat) and how
# idle the machine's CPUs were.
#
#   bench/scripts/pair.sh WORKDIR BIN_A BIN_B [ROUNDS] [MODE] [C] [SECONDS]
#
# MODE is keepalive or short (HTTP through pbench load) or pgbench
# (pgbench -S against a throwaway PostgreSQL cluster this script starts on
# the work folder's pg target). WORKDIR comes from a pbench run made with
# -work, e.g.:
#
#   bench/.bin/pbench run -quick -work /tmp/pw -tunnels postern,stunnel -scenarios keepalive-c1
#   bench/scripts/pair.sh /tmp/pw bench/.bin/postern /tmp/postern-new 4 pgbench 8
#
# A binary may be a script that sets the environment (GOMAXPROCS=1 exec ...).
# bench/scripts/gorelay.sh stands in for a binary with the simplest Go TLS
# relay (bench/cmd/gorelay), a reference point.
set -euo pipefail
work=${1:?usage: pair.sh WORKDIR BIN_A BIN_B [ROUNDS] [MODE] [C] [SECONDS]}
binA=${2:?}; binB=${3:?}; rounds=${4:-4}; mode=${5:-keepalive}; conc=${6:-32}; secs=${7:-4}
pbench=$(cd "$(dirname "$0")/.." && pwd)/.bin/pbench

svc=http
[ "$mode" = pgbench ] && svc=pg
export PAIR_SVC=$svc # the route, for a binary that is a script (gorelay.sh)
target=$(grep -A1 "name = \"$svc\"" "$work/postern-server.toml" | sed -n 's/^target = "\(.*\)"/\1/p')
pfront=$(grep -B2 "service = \"$svc\"" "$work/postern-client.toml" | sed -n 's/^listen = "\(.*\)"/\1/p')
sfront=$(awk -v s="[$svc]" '$0==s{f=1} f&&/^accept/{print $3; exit}' "$work/stunnel-client.conf")

pids=()
pgdata=
cleanup() {
	kill "${pids[@]}" 2>/dev/null || true
	wait 2>/dev/null || true
	if [ -n "$pgdata" ]; then
		run_pg "$pgbin/pg_ctl" -D "$pgdata/data" -m immediate -w stop >/dev/null 2>&1 || true
		rm -rf "$pgdata"
	fi
}
trap cleanup EXIT

if [ "$mode" = pgbench ]; then
	pgbin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
	export PGDATABASE=postgres
	pgdata=$(mktemp -d /tmp/pair-pg-XXXXXX)
	run_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
	[ "$(id -u)" -eq 0 ] && chown postgres "$pgdata"
	run_pg "$pgbin/initdb" -D "$pgdata/data" -U pbench -A trust -E UTF8 --locale=C --no-sync >/dev/null
	run_pg "$pgbin/pg_ctl" -D "$pgdata/data" -l "$pgdata/log" -w -o \
		"-c listen_addresses=127.0.0.1 -p ${target##*:} -k $pgdata -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50" start >/dev/null
	"$pgbin/pgbench" -h 127.0.0.1 -p "${target##*:}" -U pbench -i -q -s 10 >"$pgdata/init.log" 2>&1 ||
		{ echo "pair.sh: pgbench -i against 127.0.0.1:${target##*:} failed:" >&2; tail -5 "$pgdata/init.log" >&2; exit 1; }
	# Warm the new cluster (its buffers, and the vacuum and analyze that
	# follow a load) directly, uncounted: the first round through a tunnel
	# would otherwise pay for it, and that is always binary A's.
	# PAIR_PG_WARM: its seconds (default 10; 0 skips it).
	warm=${PAIR_PG_WARM:-10}
	if [ "$warm" -gt 0 ]; then
		"$pgbin/pgbench" -h 127.0.0.1 -p "${target##*:}" -U pbench -S -n -c 8 -j 2 -T "$warm" >"$pgdata/warm.log" 2>&1 ||
			{ echo "pair.sh: pgbench warm-up against 127.0.0.1:${target##*:} failed:" >&2; tail -5 "$pgdata/warm.log" >&2; exit 1; }
	fi
else
	"$pbench" serve -addr "$target" >/dev/null 2>&1 & pids+=($!)
fi
(cd "$work" && exec stunnel4 stunnel-server.conf) >/dev/null 2>&1 & pids+=($!); st1=$!
(cd "$work" && exec stunnel4 stunnel-client.conf) >/dev/null 2>&1 & pids+=($!); st2=$!

cpu() { local t=0 f; for p in "$@"; do f=($(cut -d' ' -f14,15 "/proc/$p/stat")); t=$((t + f[0] + f[1])); done; echo $t; }
idle() { awk '/^cpu /{print $5+$6}' /proc/stat; }
load() { # front
	if [ "$mode" = pgbench ]; then
		"$pgbin/pgbench" -h "${1%:*}" -p "${1##*:}" -U pbench -S -n -c "$conc" -j 2 -T "$secs" 2>&1 | sed -n 's/^tps = \([0-9]*\).*/\1/p'
	else
		"$pbench" load -addr "$1" -mode "$mode" -c "$conc" -d "${secs}s" | tail -1 | awk '{print $1}'
	fi
}
measure() { # label front pid...
	local label=$1 front=$2; shift 2
	local c0 i0 c1 i1 rate hz cores
	hz=$(getconf CLK_TCK); cores=$(nproc)
	c0=$(cpu "$@"); i0=$(idle)
	rate=$(load "$front")
	c1=$(cpu "$@"); i1=$(idle)
	awk -v l="$label" -v r="$rate" -v c=$((c1 - c0)) -v i=$((i1 - i0)) -v hz="$hz" -v s="$secs" -v n="$cores" \
		'BEGIN { printf "%-8s %8d /s  CPU %6.1f µs per request  idle %4.1f %%\n", l, r, c / hz * 1e6 / (r * s), i / hz * 100 / (s * n) }'
}
ready() { # front
	for _ in $(seq 100); do
		if [ "$mode" = pgbench ]; then "$pgbin/pg_isready" -q -h "${1%:*}" -p "${1##*:}" && return; else "$pbench" load -addr "$1" -mode keepalive -c 1 -d 50ms >/dev/null 2>&1 && return; fi
		sleep 0.1
	done
}
round() { # label binary
	"$2" run -c "$work/postern-server.toml" >/dev/null 2>&1 & local ps=$!
	"$2" run -c "$work/postern-client.toml" >/dev/null 2>&1 & local pc=$!
	ready "$pfront"
	measure "$1" "$pfront" $ps $pc
	kill $ps $pc; wait $ps $pc 2>/dev/null || true
}
ready "$sfront"
for _ in $(seq "$rounds"); do
	round A "$binA"
	round B "$binB"
	measure stunnel "$sfront" $st1 $st2
done
