#!/usr/bin/env bash
# CPU per kept-alive request of two Postern agents, against stunnel in the
# same run, with the runtime's threads broken out (perf stat and
# /proc/PID/task): the measurement behind docs/performance.md, "System calls
# that wake the runtime's monitor".
#
#   bench/scripts/cpu-per-request.sh WORKDIR [POSTERN_BINARY] [ROUNDS]
#
# WORKDIR is the work folder of a pbench run made with -work (its configs,
# certificates and HTTP target address are reused):
#
#   bench/.bin/pbench run -quick -work /tmp/pw -tunnels postern,stunnel -scenarios keepalive-c1
#   bench/scripts/cpu-per-request.sh /tmp/pw bench/.bin/postern 3
#
# Prints, per round, requests/s and CPU µs per request (both tunnel ends,
# task-clock) for Postern and stunnel, and the context switches per request.
set -euo pipefail
work=${1:?usage: cpu-per-request.sh WORKDIR [POSTERN_BINARY] [ROUNDS]}
bin=${2:-bench/.bin/postern}
rounds=${3:-3}
pbench=$(dirname "$0")/../.bin/pbench
target=$(sed -n 's/^target = "\(.*\)"/\1/p' "$work/postern-server.toml" | head -1)
front=$(sed -n 's/^listen = "\(.*\)"/\1/p' "$work/postern-client.toml" | head -1)
sfront=$(sed -n 's/^accept = \(.*\)/\1/p' "$work/stunnel-client.conf" | head -1)

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$pbench" serve -addr "$target" >/dev/null 2>&1 & pids+=($!)
"$bin" run -c "$work/postern-server.toml" >/dev/null 2>&1 & srv=$!; pids+=($srv)
"$bin" run -c "$work/postern-client.toml" >/dev/null 2>&1 & cli=$!; pids+=($cli)
(cd "$work" && exec stunnel4 stunnel-server.conf) >/dev/null 2>&1 & s1=$!; pids+=($s1)
(cd "$work" && exec stunnel4 stunnel-client.conf) >/dev/null 2>&1 & s2=$!; pids+=($s2)
for i in $(seq 50); do # until every front answers
	"$pbench" load -addr "$front" -mode keepalive -c 1 -d 100ms >/dev/null 2>&1 &&
		"$pbench" load -addr "$sfront" -mode keepalive -c 1 -d 100ms >/dev/null 2>&1 && break
done

measure() { # name front pid...
	local name=$1 addr=$2; shift 2
	local list; list=$(IFS=,; echo "$*")
	perf stat -x, -e task-clock,context-switches -p "$list" -o /tmp/cpr.$$ -- sleep 4.2 &
	local p=$!
	local out; out=$("$pbench" load -addr "$addr" -mode keepalive -c 1 -d 4s)
	wait $p
	local rps; rps=$(awk '{print $1}' <<<"$out")
	awk -F, -v n="$name" -v r="$rps" '
		/task-clock/ {cpu=$1} /context-switches/ {cs=$1}
		END {printf "%-8s %6d req/s  %6.1f µs CPU/req  %5.1f switches/req   ", n, r, cpu*1000/(r*4), cs/(r*4)}' /tmp/cpr.$$
}
for r in $(seq "$rounds"); do
	measure postern "$front" "$srv" "$cli"
	measure stunnel "$sfront" "$s1" "$s2"
	echo
done
rm -f /tmp/cpr.$$
