#!/usr/bin/env bash
# What one write costs a 3-replica Squall ensemble, by how many requests are in flight.
#
# Starts three `squall node` replicas on 127.0.0.1 (each with its own data directory in one
# temporary directory, fsync on as always), warms them up, then for each --in-flight value runs
# `squall bench coordinator` against them and prints one line: ops/s, p50, p99 and p99.9, the
# CPU the three replicas spent per 100,000 requests (from /proc), and, when `perf` may trace
# system calls here, the system calls per request of the three replicas together (all that are
# counted, and fdatasync and futex apart) and their threads' context switches. The replicas are the same
# processes throughout, so the lines differ only in the load.
#
# Usage: benches/coordinator-costs.sh [--mix set] [--ops N] [--clients C]
#          [--in-flight "8 32"] [--rounds R] [--value-size B]
#   --mix M          the workload of `squall bench coordinator` (set)
#   --ops N          requests per measured run (100000); --clients C sessions (64)
#   --in-flight L    the requests in flight per session to measure, in order ("8 32")
#   --rounds R       how many times the list is run (1)
#   SQUALL_NODE_FLAGS  more flags for each `squall node` (none)
#   SQUALL_BIN         a `squall` binary to measure instead of building this tree's (for A/B
#                      runs of two builds, alternated)

set -euo pipefail

MIX='set'
OPS=100000
CLIENTS=64
IN_FLIGHT="8 32"
ROUNDS=1
VALUE_SIZE=100
SQUALL_NODE_FLAGS=${SQUALL_NODE_FLAGS:-}

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }

while (($#)); do
  case $1 in
    --mix) MIX=$2; shift 2 ;;
    --ops) OPS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --in-flight) IN_FLIGHT=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --value-size) VALUE_SIZE=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SQUALL=${SQUALL_BIN:-$PWD/target/release/squall}
say() { printf '%s\n' "$*" >&2; }
command -v python3 >/dev/null || { say "python3 is missing: it picks free ports"; exit 1; }
if [[ -z ${SQUALL_BIN:-} ]]; then
  say "building squall (release)"
  cargo build --release --locked --bin squall >&2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/squall-costs.XXXXXX")
mkdir -p "$WORK/logs"
PIDS=()
# shellcheck source=benches/lib.sh
source benches/lib.sh
cleanup() {
  stop_all
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r -a PORTS <<<"$(free_ports 6)"
PEERS=()
for j in 1 2 3; do PEERS+=(--peer "$j=127.0.0.1:${PORTS[j + 2]}"); done
CLIENT_PORTS=()
for i in 1 2 3; do
  CLIENT_PORTS+=("${PORTS[i - 1]}")
  # shellcheck disable=SC2086 # SQUALL_NODE_FLAGS is a list of flags
  "$SQUALL" node --id "$i" --data-dir "$WORK/squall-$i" --listen "127.0.0.1:${PORTS[i - 1]}" \
    --raft "127.0.0.1:${PORTS[i + 2]}" "${PEERS[@]}" $SQUALL_NODE_FLAGS >"$WORK/logs/squall-$i.log" 2>&1 &
  PIDS+=($!)
done
wait_ready Squall "$WORK/logs/squall-" "${PIDS[*]}" "${CLIENT_PORTS[*]}"
TARGET=$(IFS=,; echo "${CLIENT_PORTS[*]/#/127.0.0.1:}")

HZ=$(getconf CLK_TCK)

# Whether perf may count the replicas' system calls.
SYSCALLS=(fdatasync futex sendto sendmsg writev write recvfrom recvmsg read epoll_wait)
TRACE=0
if command -v perf >/dev/null && perf stat -e syscalls:sys_enter_futex -p "${PIDS[0]}" -- sleep 0.1 >/dev/null 2>&1; then
  TRACE=1
else
  say "perf cannot trace system calls here: their columns stay empty"
fi

bench() {
  "$SQUALL" bench coordinator --target "$TARGET" --clients "$CLIENTS" --in-flight "$1" --ops "$2" \
    --mix "$MIX" --value-size "$VALUE_SIZE" --json "$WORK/run.json" >"$WORK/run.out" 2>&1 \
    || { say "squall bench coordinator failed:"; cat "$WORK/run.out" >&2; exit 1; }
}

say "warming up (10000 requests)"
bench 8 10000

printf '%s\n' "3 Squall replicas on 127.0.0.1, $(nproc) cores; $MIX, $CLIENTS sessions, $OPS requests per run, $VALUE_SIZE B values; squall ${SQUALL_BIN:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}"
printf '%-6s %-10s %10s %8s %8s %9s %22s %16s %12s %10s %10s\n' round in-flight ops/s "p50 ms" "p99 ms" "p99.9 ms" "replica CPU s/100k ops" "syscalls per op" "fdatasync" futex switches
for round in $(seq "$ROUNDS"); do
  for flight in $IN_FLIGHT; do
    if ((TRACE)); then
      events=()
      for call in "${SYSCALLS[@]}"; do events+=(-e "syscalls:sys_enter_$call"); done
      events+=(-e context-switches)
      pids=$(IFS=,; echo "${PIDS[*]}")
      perf stat -x, "${events[@]}" -p "$pids" -o "$WORK/perf.csv" &
      PERF=$!
      sleep 0.2
    fi
    before=$(cpu_ticks "${PIDS[@]}")
    bench "$flight" "$OPS"
    after=$(cpu_ticks "${PIDS[@]}")
    calls=("" "" "" "")
    if ((TRACE)); then
      kill -INT "$PERF"
      wait "$PERF" || true
      read -r -a calls <<<"$(python3 - "$WORK/perf.csv" "$OPS" <<'PY'
import sys
counts = {}
switches = 0
for line in open(sys.argv[1]):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].isdigit():
        if parts[2].startswith("syscalls:sys_enter_"):
            counts[parts[2][len("syscalls:sys_enter_"):]] = int(parts[0])
        elif parts[2] == "context-switches":
            switches = int(parts[0])
ops = int(sys.argv[2])
print(f"{sum(counts.values()) / ops:.2f} {counts.get('fdatasync', 0) / ops:.3f} {counts.get('futex', 0) / ops:.2f} {switches / ops:.2f}")
PY
)"
    fi
    read -r rate p50 p99 p999 <<<"$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("%.0f %.1f %.1f %.1f" % (r["ops_per_sec"], r["p50_us"] / 1000, r["p99_us"] / 1000, r["p999_us"] / 1000))' "$WORK/run.json")"
    cpu=$(python3 -c "print(f'{($after - $before) / $HZ * 100000 / $OPS:.2f}')")
    printf '%-6s %-10s %10s %8s %8s %9s %22s %16s %12s %10s %10s\n' "$round" "$flight" "$rate" "$p50" "$p99" "$p999" "$cpu" "${calls[0]}" "${calls[1]}" "${calls[2]}" "${calls[3]}"
  done
done
