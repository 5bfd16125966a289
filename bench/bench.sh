#!/usr/bin/env bash
# Postern's side-by-side benchmark: direct TCP, Postern, stunnel4 and HAProxy
# on loopback, with HTTP, iperf3 and pgbench (a throwaway PostgreSQL cluster)
# through each. Installs what it needs (Debian/Ubuntu), builds Postern and the
# benchmark driver, and runs it. See docs/performance.md.
#
#   bench/bench.sh [--quick] [pbench run flags...]
#
# Writes bench/results/latest.json, latest.md and chart.png, and prints the
# table; then bench/swarm.sh writes swarm.md (one hub, thousands of
# partners). The full run takes about 15 minutes on 2 cores, --quick under 3.
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}

args=()
quick=
for a in "$@"; do
	case "$a" in
	--quick) args+=(-quick) quick=1 ;;
	*) args+=("$a") ;;
	esac
done

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		echo "bench: need root to run: $*" >&2
		return 1
	fi
}

# Tools from the distribution, installed only when missing.
missing=()
command -v stunnel4 >/dev/null || missing+=(stunnel4)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v ip >/dev/null || missing+=(iproute2)
# initdb, pg_ctl and pgbench, from Debian's server package; the cluster is
# the benchmark's own (bench/cmd/pbench/pg.go), not the package's.
compgen -G '/usr/lib/postgresql/*/bin/pgbench' >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
	if ! command -v apt-get >/dev/null; then
		echo "bench: please install: ${missing[*]}" >&2
		exit 1
	fi
	echo "bench: installing ${missing[*]}" >&2
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 10,000 held connections need about 40,000 descriptors in this process
# tree (load, target and both tunnel ends). Root may raise the hard limit.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

mkdir -p bench/.bin
"$GO" build -trimpath -o bench/.bin/postern ./cmd/postern
"$GO" build -trimpath -o bench/.bin/pbench ./bench/cmd/pbench

# The 40 ms link uses network namespaces, which need root; everything else
# runs as the calling user.
if [ "$(id -u)" -ne 0 ]; then
	echo "bench: not root: the 40 ms link scenario will be skipped if namespaces cannot be made" >&2
fi
bench/.bin/pbench run -bin bench/.bin/postern -out bench/results "${args[@]+"${args[@]}"}"
# One hub and thousands of partners: bench/results/swarm.md.
bench/swarm.sh ${quick:+--quick}
