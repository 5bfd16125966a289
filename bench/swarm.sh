#!/usr/bin/env bash
# The partner swarm: one hub agent and N partner sites reconnecting to it at
# once, then idle (BenchmarkSwarm in agent/swarm_test.go), for N = 1,000,
# 3,000 and 10,000, three rounds (--quick: N = 1,000, one round). Writes
# bench/results/swarm.md (handshakes per second, the hub's memory per idle
# tunnel, its CPU while idle) and links it from latest.md. Run by
# bench/bench.sh after the side-by-side benchmark; see docs/scaling.md.
#
#   bench/swarm.sh [--quick]
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}

sizes=(1000 3000 10000)
rounds=3
mode=full
if [ "${1:-}" = --quick ]; then
	sizes=(1000)
	rounds=1
	mode=quick
fi

# 10,000 tunnels are 20,000 descriptors here (the hub's and the partners').
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

mkdir -p bench/.bin bench/results
"$GO" test -c -o bench/.bin/agent.test ./agent/
"$GO" build -o bench/.bin/swarmreport ./bench/cmd/swarmreport

# As root, each run gets a network namespace of its own (its loopback, its
# counters, no other test's connections) whose listen queues hold a whole
# storm: net.core.somaxconn and net.ipv4.tcp_max_syn_backlog = 16384, as
# docs/scaling.md advises for a hub of more than 4,000 partners (at the
# kernel's default of 4,096 the queues overflow, and partners wait for SYN
# retransmits or arrive by SYN cookies without their hello).
backlog=16384
netns=()
note="kernel defaults (not root: no private network namespace)"
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null && unshare -n true 2>/dev/null; then
	netns=(unshare -n sh -c 'ip link set lo up && sysctl -qw net.core.somaxconn="$0" net.ipv4.tcp_max_syn_backlog="$0" && exec "$@"' "$backlog")
	note="a private network namespace with net.core.somaxconn = net.ipv4.tcp_max_syn_backlog = $backlog"
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
failed=0
# Sizes alternate within a round, so that a disturbance of the machine
# spreads over them rather than falling on one.
for round in $(seq "$rounds"); do
	for n in "${sizes[@]}"; do
		echo "swarm: round $round of $rounds, $n partners (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
		if ! (cd agent && ${netns[@]+"${netns[@]}"} ../bench/.bin/agent.test -test.run '^$' -test.bench "Swarm/^n=$n\$/^keepalive=10s\$" \
			-test.benchtime 1x -test.timeout 15m) | tee -a "$out"; then
			echo "swarm: the run with $n partners failed" >&2
			failed=$((failed + 1))
		fi
	done
done
bench/.bin/swarmreport -mode "$mode" -failed "$failed" -note "$note" -out bench/results/swarm.md -latest bench/results/latest.md <"$out"
cat bench/results/swarm.md
