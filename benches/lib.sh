# shellcheck shell=bash
# Shell helpers of the coordinator benchmarks (benches/vs-zookeeper.sh,
# benches/coordinator-costs.sh): sourced, not run. They expect PIDS (an array of the processes to
# stop) and say() from the script.

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

# Distinct free loopback ports, held open together while they are picked.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# The answer to a four-letter word on 127.0.0.1:PORT (empty if nothing answers).
four_letter() {
  # shellcheck disable=SC2016 # $0 and $1 are the inner shell's
  timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf %s "$1" >&3 && cat <&3' "$1" "$2" 2>/dev/null || true
}

# Waits until every port's `srvr` shows a mode and exactly one of them leads.
wait_ready() {
  local name=$1 log=$2 pids=$3 ports=$4 deadline=$((SECONDS + 120)) port pid modes
  while ((SECONDS < deadline)); do
    for pid in $pids; do
      kill -0 "$pid" 2>/dev/null || { say "$name: process $pid exited; its log:"; tail -n 30 "$log"* >&2; exit 1; }
    done
    modes=$(for port in $ports; do four_letter "$port" srvr | sed -n 's/^Mode: //p'; done)
    if [[ $(grep -c . <<<"$modes") == 3 && $(grep -c '^leader$' <<<"$modes") == 1 ]]; then return; fi
    sleep 0.2
  done
  say "$name: no leader after 120 s"; tail -n 30 "$log"* >&2; exit 1
}

# CPU time (user + system) of processes, in clock ticks (0 for one that is gone).
cpu_ticks() {
  local pid total=0
  for pid in "$@"; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0))); done
  echo "$total"
}

# Resident memory of processes, in MiB: the sum of their VmRSS.
rss_mib() {
  local pid total=0
  for pid in "$@"; do total=$((total + $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"))); done
  echo $((total / 1024))
}

