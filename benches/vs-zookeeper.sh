#!/usr/bin/env bash
# Squall's coordinator next to Apache ZooKeeper on this machine, through the same client.
#
# Starts a 3-server Apache ZooKeeper ensemble (Debian's `zookeeper` package, installed when
# missing) and a 3-replica `squall node` ensemble on 127.0.0.1, each server with its own data
# directory under one temporary directory, both fsyncing every write before acknowledging it
# (ZooKeeper's forceSync=yes, its default; Squall always fsyncs). Then:
#   1. measures this disk's fsync latency, the physical floor of a synchronous write;
#   2. runs each workload (`squall bench coordinator --mix ...`) once against each ensemble as a
#      warm-up (the JVM compiles ZooKeeper's hot paths in its first seconds), then against
#      Squall and ZooKeeper in alternation, each measured run once both ensembles are idle,
#      and prints one table: ops/s of each, the ratio Squall/ZooKeeper, p99 of each;
#   3. loads MEMORY_ZNODES znodes of VALUE_SIZE bytes into each ensemble and prints the resident
#      memory of its three server processes (sum of VmRSS), before and after, and ZooKeeper's
#      live heap after a full GC.
# Everything it started is stopped when it exits, however it exits.
#
# Usage: benches/vs-zookeeper.sh [--ops N] [--read-ops N] [--clients C] [--in-flight F]
#          [--workloads "create set get mixed multi"] [--rounds R] [--memory-znodes N]
#          [--warmup-ops N] [--skip-memory] [--zk-heap SIZE] [--keep-dir]
# Each flag has an environment variable of the same name in capitals (OPS, READ_OPS, CLIENTS,
# IN_FLIGHT, WORKLOADS, ROUNDS, WARMUP_OPS, MEMORY_ZNODES, ZK_HEAP; SKIP_MEMORY=1, KEEP_DIR=1);
# flags win.
#   --ops N            requests per run of the write workloads: create, set, multi (100000)
#   --read-ops N       requests per run of get and mixed, which go faster (4 x --ops)
#   --clients C        concurrent sessions (64); --in-flight F requests in flight per session (8)
#   --workloads LIST   which workloads, in order (create set get mixed multi)
#   --rounds R         how many times the whole alternation is repeated (1)
#   --warmup-ops N     requests of the unreported warm-up run of each workload (10000; 0: none)
#   --memory-znodes N  znodes loaded for the memory figure (1000000); --skip-memory skips it
#   --zk-heap SIZE     ZooKeeper's -Xmx (4g); JVMFLAGS adds other JVM flags
#   SQUALL_NODE_FLAGS  more flags for each `squall node` (none), e.g. "--tick 2s" for ZooKeeper's
#                      tickTime and so its session timeouts (Squall's 100ms tick caps them at 2 s)
#   --keep-dir         keeps the temporary directory (data, logs, JSON results) at the end

set -euo pipefail

OPS=${OPS:-100000}
READ_OPS=${READ_OPS:-}
CLIENTS=${CLIENTS:-64}
IN_FLIGHT=${IN_FLIGHT:-8}
WORKLOADS=${WORKLOADS:-create set get mixed multi}
ROUNDS=${ROUNDS:-1}
WARMUP_OPS=${WARMUP_OPS:-10000}
MEMORY_ZNODES=${MEMORY_ZNODES:-1000000}
SKIP_MEMORY=${SKIP_MEMORY:-0}
ZK_HEAP=${ZK_HEAP:-4g}
JVMFLAGS=${JVMFLAGS:-}
SQUALL_NODE_FLAGS=${SQUALL_NODE_FLAGS:-}
KEEP_DIR=${KEEP_DIR:-0}
VALUE_SIZE=${VALUE_SIZE:-100}
ZNODES=${ZNODES:-1000}

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }

while (($#)); do
  case $1 in
    --ops) OPS=$2; shift 2 ;;
    --read-ops) READ_OPS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --in-flight) IN_FLIGHT=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --warmup-ops) WARMUP_OPS=$2; shift 2 ;;
    --memory-znodes) MEMORY_ZNODES=$2; shift 2 ;;
    --skip-memory) SKIP_MEMORY=1; shift ;;
    --zk-heap) ZK_HEAP=$2; shift 2 ;;
    --keep-dir) KEEP_DIR=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
READ_OPS=${READ_OPS:-$((4 * OPS))}
WORKLOADS=${WORKLOADS//,/ }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SQUALL=$PWD/target/release/squall
ZK_JAR=/usr/share/java/zookeeper.jar

say() { printf '%s\n' "$*" >&2; }

# --- What is needed -------------------------------------------------------------------------

if [[ ! -f $ZK_JAR ]]; then
  say "installing Debian's zookeeper package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q zookeeper >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q zookeeper >/dev/null; }
fi
command -v java >/dev/null || { say "java is missing (Debian's zookeeper package depends on default-jre)"; exit 1; }
command -v python3 >/dev/null || { say "python3 is missing: it picks free ports, times fsync and reads the JSON"; exit 1; }
say "building squall (release)"
cargo build --release --locked --bin squall >&2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/squall-vs-zk.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/results"
PIDS=()

# shellcheck source=benches/lib.sh
source benches/lib.sh
cleanup() {
  stop_all
  if [[ $KEEP_DIR == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r -a PORTS <<<"$(free_ports 15)"

# --- Apache ZooKeeper: 3 servers ------------------------------------------------------------

ZK_PIDS=()
ZK_CLIENT=()
for i in 1 2 3; do
  dir=$WORK/zookeeper-$i
  mkdir -p "$dir/data"
  echo "$i" >"$dir/data/myid"
  ZK_CLIENT+=("${PORTS[i - 1]}")
  {
    echo "tickTime=2000"
    echo "initLimit=10"
    echo "syncLimit=5"
    echo "dataDir=$dir/data"
    echo "clientPortAddress=127.0.0.1"
    echo "clientPort=${PORTS[i - 1]}"
    for j in 1 2 3; do echo "server.$j=127.0.0.1:${PORTS[j + 2]}:${PORTS[j + 5]}"; done
    echo "forceSync=yes"
    echo "maxClientCnxns=0"
    echo "admin.enableServer=false"
    echo "4lw.commands.whitelist=*"
  } >"$dir/zoo.cfg"
  # shellcheck disable=SC2086 # JVMFLAGS is a list of flags
  java "-Xmx$ZK_HEAP" $JVMFLAGS -cp "$ZK_JAR" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
    >"$WORK/logs/zookeeper-$i.log" 2>&1 &
  ZK_PIDS+=($!)
  PIDS+=($!)
done

# --- Squall: 3 replicas ---------------------------------------------------------------------

SQ_PIDS=()
SQ_CLIENT=()
PEERS=()
for j in 1 2 3; do PEERS+=(--peer "$j=127.0.0.1:${PORTS[j + 11]}"); done
for i in 1 2 3; do
  SQ_CLIENT+=("${PORTS[i + 8]}")
  # shellcheck disable=SC2086 # SQUALL_NODE_FLAGS is a list of flags
  "$SQUALL" node --id "$i" --data-dir "$WORK/squall-$i" --listen "127.0.0.1:${PORTS[i + 8]}" \
    --raft "127.0.0.1:${PORTS[i + 11]}" "${PEERS[@]}" $SQUALL_NODE_FLAGS >"$WORK/logs/squall-$i.log" 2>&1 &
  SQ_PIDS+=($!)
  PIDS+=($!)
done

wait_ready ZooKeeper "$WORK/logs/zookeeper-" "${ZK_PIDS[*]}" "${ZK_CLIENT[*]}"
wait_ready Squall "$WORK/logs/squall-" "${SQ_PIDS[*]}" "${SQ_CLIENT[*]}"
join() { local IFS=,; echo "$*"; }
ZK_TARGET=$(join "${ZK_CLIENT[@]/#/127.0.0.1:}")
SQ_TARGET=$(join "${SQ_CLIENT[@]/#/127.0.0.1:}")
ZK_VERSION=$(four_letter "${ZK_CLIENT[0]}" srvr | sed -n 's/^Zookeeper version: \([^,-]*\).*/\1/p')
say "ZooKeeper $ZK_VERSION on $ZK_TARGET, Squall on $SQ_TARGET; data and logs in $WORK"

# --- The disk's floor -----------------------------------------------------------------------

say "timing fsync on the data directories' disk"
FSYNC=$(python3 - "$WORK" <<'EOF'
import os, statistics, sys, time
def timed(path, append):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"x" * 4096
    if not append:
        os.write(fd, block * 64)
        os.fsync(fd)
    took = []
    for i in range(300):
        if not append:
            os.lseek(fd, (i % 64) * 4096, 0)
        start = time.perf_counter()
        os.write(fd, block)
        os.fdatasync(fd)
        took.append((time.perf_counter() - start) * 1e3)
    os.close(fd)
    os.unlink(path)
    took.sort()
    return "p50 %.2f ms, p99 %.2f ms, mean %.2f ms" % (took[len(took) // 2], took[int(len(took) * 0.99)], statistics.mean(took))
print("write 4 KiB + fdatasync, appending: %s; overwriting in place: %s"
      % (timed(os.path.join(sys.argv[1], "fsync-append"), True), timed(os.path.join(sys.argv[1], "fsync-overwrite"), False)))
EOF
)

# --- The workloads, in alternation ----------------------------------------------------------

HZ=$(getconf CLK_TCK)
QUIET_WAITS=0

# Waits until both ensembles are idle: their servers used under a tenth of a core over the last
# half second. The ensemble measured last keeps working after its run (a JVM collects garbage and
# compiles, a replica applies and snapshots), and the next run, against the other, would pay for
# it. Gives up after 20 s and says so.
wait_quiet() {
  local deadline=$((SECONDS + 20)) before after
  while ((SECONDS < deadline)); do
    before=$(cpu_ticks "${ZK_PIDS[@]}" "${SQ_PIDS[@]}")
    sleep 0.5
    after=$(cpu_ticks "${ZK_PIDS[@]}" "${SQ_PIDS[@]}")
    if (((after - before) * 10 < HZ / 2)); then return; fi
  done
  QUIET_WAITS=$((QUIET_WAITS + 1))
  say "  the servers were still busy after 20 s; measuring anyway"
}

# Runs one workload against one ensemble (round 0: the warm-up), once both ensembles are idle; a
# run with failed requests still leaves its JSON.
bench() {
  local system=$1 target=$2 mix=$3 round=$4 ops=$OPS log
  log=$WORK/logs/bench-$system-$mix-$round.log
  [[ $mix == get || $mix == mixed ]] && ops=$READ_OPS
  ((round > 0)) || ops=$WARMUP_OPS
  ((round == 0)) || wait_quiet
  say "round $round: $mix x $ops against $system"
  if "$SQUALL" bench coordinator --target "$target" --clients "$CLIENTS" --in-flight "$IN_FLIGHT" --ops "$ops" \
    --mix "$mix" --value-size "$VALUE_SIZE" --znodes "$ZNODES" --json "$WORK/results/$system-$mix-$round.json" \
    >"$log" 2>&1; then
    say "  $(tail -n 1 "$log")"
  else
    say "  failed: $(tail -n 1 "$log")"
  fi
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if ((WARMUP_OPS > 0)); then
  for mix in $WORKLOADS; do
    bench squall "$SQ_TARGET" "$mix" 0
    bench zookeeper "$ZK_TARGET" "$mix" 0
  done
fi
STARTED=$SECONDS
for round in $(seq "$ROUNDS"); do
  for mix in $WORKLOADS; do
    # Who goes first alternates, so drift on a shared machine does not favour one side.
    if (((round % 2) == 1)); then
      bench squall "$SQ_TARGET" "$mix" "$round"
      bench zookeeper "$ZK_TARGET" "$mix" "$round"
    else
      bench zookeeper "$ZK_TARGET" "$mix" "$round"
      bench squall "$SQ_TARGET" "$mix" "$round"
    fi
  done
done
WORKLOAD_S=$((SECONDS - STARTED))

# --- Memory after loading znodes ------------------------------------------------------------

MEMORY=""
if [[ $SKIP_MEMORY != 1 ]]; then
  load() {
    local system=$1 target=$2 port=$3
    shift 3
    local before after count disk rate errors
    before=$(rss_mib "$@")
    say "loading $MEMORY_ZNODES znodes of $VALUE_SIZE B into $system"
    "$SQUALL" bench coordinator --target "$target" --clients "$CLIENTS" --in-flight "$IN_FLIGHT" --mix create \
      --ops "$MEMORY_ZNODES" --value-size "$VALUE_SIZE" --keep --json "$WORK/results/$system-load.json" \
      >"$WORK/logs/bench-$system-load.log" 2>&1 || say "  failed: $(tail -n 1 "$WORK/logs/bench-$system-load.log")"
    sleep 2
    after=$(rss_mib "$@")
    count=$(four_letter "$port" mntr | sed -n 's/^zk_znode_count\t//p')
    disk=$(du -smc "$WORK/$system"-[123] | tail -n 1 | cut -f1)
    read -r rate errors < <(python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("%.0f %d" % (r["ops_per_sec"], r["errors"]))' "$WORK/results/$system-load.json" 2>/dev/null || echo "? ?")
    printf '%-10s %10s MiB %10s MiB %10s %10s %8s %8s MiB\n' "$system" "$before" "$after" "$count" "$rate" "$errors" \
      "$disk"
  }
  # What of ZooKeeper's resident memory is live data: the heap in use after a full GC, summed.
  live_heap_mib() {
    local pid total=0 used
    command -v jcmd >/dev/null || { echo "?"; return; }
    for pid in "$@"; do
      jcmd "$pid" GC.run >/dev/null 2>&1 || true
      used=$(jcmd "$pid" GC.heap_info 2>/dev/null | sed -n 's/.*total [0-9]*K, used \([0-9]*\)K.*/\1/p' | head -n 1)
      total=$((total + ${used:-0}))
    done
    echo "$((total / 1024)) MiB"
  }
  MEMORY=$(
    printf '%-10s %14s %14s %10s %10s %8s %12s\n' ensemble "RSS before" "RSS after" znodes creates/s errors \
      "data dirs"
    load squall "$SQ_TARGET" "${SQ_CLIENT[0]}" "${SQ_PIDS[@]}"
    load zookeeper "$ZK_TARGET" "${ZK_CLIENT[0]}" "${ZK_PIDS[@]}"
    echo "ZooKeeper's live heap after a full GC (jcmd GC.run; GC.heap_info), 3 servers: $(live_heap_mib "${ZK_PIDS[@]}")"
  )
fi

# --- The report -----------------------------------------------------------------------------

echo
echo "Squall vs Apache ZooKeeper $ZK_VERSION, 3 servers each on 127.0.0.1, fsync on every write"
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))," \
  "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load average $LOAD_BEFORE at the start," \
  "$(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "squall $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes')" \
  "$SQUALL_NODE_FLAGS; ZooKeeper -Xmx$ZK_HEAP $JVMFLAGS"
echo "$CLIENTS sessions x $IN_FLIGHT in flight, $VALUE_SIZE B values, $ZNODES znodes;" \
  "$OPS requests per write run, $READ_OPS per get/mixed run (after a warm-up of $WARMUP_OPS);" \
  "the measured runs took ${WORKLOAD_S}s$( ((QUIET_WAITS == 0)) || echo "; $QUIET_WAITS started with the servers still busy")"
echo "fsync floor: $FSYNC"
echo
# shellcheck disable=SC2086 # one argument per workload
python3 - "$WORK/results" "$ROUNDS" $WORKLOADS <<'EOF'
import json, os, sys
results, rounds, workloads = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(system, mix, round):
    try:
        with open(os.path.join(results, f"{system}-{mix}-{round}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def cell(report, op, key, fmt):
    if report is None:
        return "failed"
    row = report if op == "total" else report["by_op"].get(op)
    return fmt(row[key]) if row else "-"
rate = lambda v: f"{v:,.0f}"
ms = lambda v: f"{v / 1000:.1f}"
head = ["workload", "op", "Squall ops/s", "ZooKeeper ops/s", "Squall/ZK", "Squall p99 ms", "ZK p99 ms", "errors S/ZK"]
if rounds > 1:
    head.insert(0, "round")
rows = []
for round in range(1, rounds + 1):
    for mix in workloads:
        s, z = load("squall", mix, round), load("zookeeper", mix, round)
        ops = sorted(set((s or {}).get("by_op", {})) | set((z or {}).get("by_op", {})))
        if len(ops) > 1:
            ops.append("total")
        for op in ops or ["total"]:
            ratio = "-"
            if s and z:
                sr, zr = (r if op == "total" else r["by_op"].get(op, {}) for r in (s, z))
                if sr.get("ops_per_sec") and zr.get("ops_per_sec"):
                    ratio = f"{sr['ops_per_sec'] / zr['ops_per_sec']:.2f}"
            row = [mix, op, cell(s, op, "ops_per_sec", rate), cell(z, op, "ops_per_sec", rate), ratio,
                   cell(s, op, "p99_us", ms), cell(z, op, "p99_us", ms),
                   f"{cell(s, op, 'errors', str)}/{cell(z, op, 'errors', str)}"]
            rows.append([str(round)] + row if rounds > 1 else row)
widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
for r in [head] + rows:
    print("  ".join(c.ljust(w) if i < (3 if rounds > 1 else 2) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
EOF
if [[ -n $MEMORY ]]; then
  echo
  echo "Resident memory of the 3 server processes (sum of VmRSS) before and after loading" \
    "$MEMORY_ZNODES znodes of $VALUE_SIZE B (ZooKeeper -Xmx$ZK_HEAP):"
  echo "$MEMORY"
fi
