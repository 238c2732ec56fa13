#!/usr/bin/env bash
# Consume-and-count throughput from a Kafka-protocol broker on this machine, next to the raw
# consume rate of a bare rdkafka consumer on the same topic, in the same run.
#
# Starts tansu (`scripts/tansu` installs it when missing) on a free 127.0.0.1 port with in-memory
# storage, builds squall in release, and runs `squall bench kafka --produce`: it creates a topic,
# produces the messages with an idempotent producer (the partitions' ends come from the delivery
# reports: tansu's high watermark falls short of the end), then, ROUNDS times, reads them all
# with a bare rdkafka BaseConsumer and then with a Squall topology, acking on, and prints one
# table with both rates and their ratio. It does so for each work, on a topic of its own, in
# this order: `count` (kafka spout -> count by partition: consume and count) and `wordcount`
# (kafka spout -> split -> count by word). tansu is killed when it exits, however it exits.
#
# Usage: benches/kafka.sh [--messages N] [--partitions P] [--value-size B] [--rounds R]
#          [--bolt-tasks T] [--work W] [--keep-dir]
# Each flag has an environment variable of the same name in capitals (MESSAGES, PARTITIONS,
# VALUE_SIZE, ROUNDS, BOLT_TASKS, WORK; KEEP_DIR=1); flags win.
#   --messages N     messages produced and read by each side in each round (1000000)
#   --partitions P   partitions of the topic (4)
#   --value-size B   the most bytes of a message: a sentence of whole words up to B (80)
#   --rounds R       how many times each side is measured, in alternation; medians reported (3)
#   --bolt-tasks T   tasks of each bolt (1)
#   --work W         `count`, `wordcount`, or `both` (count, then wordcount) (both)
#   --keep-dir       keeps the temporary directory (tansu's log, the JSON result) at the end

set -euo pipefail

MESSAGES=${MESSAGES:-1000000}
PARTITIONS=${PARTITIONS:-4}
VALUE_SIZE=${VALUE_SIZE:-80}
ROUNDS=${ROUNDS:-3}
BOLT_TASKS=${BOLT_TASKS:-1}
WORK=${WORK:-both}
KEEP_DIR=${KEEP_DIR:-0}

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }

while (($#)); do
  case $1 in
    --messages) MESSAGES=$2; shift 2 ;;
    --partitions) PARTITIONS=$2; shift 2 ;;
    --value-size) VALUE_SIZE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --bolt-tasks) BOLT_TASKS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --keep-dir) KEEP_DIR=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

case $WORK in
  both) WORKS=(count wordcount) ;;
  count | wordcount) WORKS=("$WORK") ;;
  *) echo "--work must be count, wordcount or both, not '$WORK'" >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SQUALL=$PWD/target/release/squall

say() { printf '%s\n' "$*" >&2; }

# --- What is needed -------------------------------------------------------------------------

command -v python3 >/dev/null || { say "python3 is missing: it picks a free port"; exit 1; }
TANSU=$(scripts/tansu)
say "building squall (release)"
cargo build --release --locked --bin squall >&2

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/squall-bench-kafka.XXXXXX")
TANSU_PID=

cleanup() {
  if [[ -n $TANSU_PID ]]; then
    kill -KILL "$TANSU_PID" 2>/dev/null || true
    wait "$TANSU_PID" 2>/dev/null || true
  fi
  if [[ $KEEP_DIR == 1 ]]; then say "kept $WORK_DIR"; else rm -rf "$WORK_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port no one listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# CPU seconds (user + system) process $1 has used so far.
cpu_seconds() {
  awk -v tck="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / tck }' "/proc/$1/stat"
}

# --- The broker -----------------------------------------------------------------------------

PORT=$(free_port)
URL=tcp://127.0.0.1:$PORT
# Nothing from the environment may send tansu elsewhere (an OTLP exporter, a schema registry).
env -u CLUSTER_ID -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT \
  "$TANSU" broker --listener-url "$URL" --advertised-listener-url "$URL" --storage-engine memory://tansu/ \
  >"$WORK_DIR/tansu.log" 2>&1 &
TANSU_PID=$!
deadline=$((SECONDS + 30))
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
  kill -0 "$TANSU_PID" 2>/dev/null || { say "tansu exited; its log:"; tail -n 30 "$WORK_DIR/tansu.log" >&2; exit 1; }
  ((SECONDS < deadline)) || { say "tansu is not listening on $PORT after 30 s"; tail -n 30 "$WORK_DIR/tansu.log" >&2; exit 1; }
  sleep 0.1
done
TANSU_VERSION=$("$TANSU" --version 2>/dev/null || echo tansu)
say "$TANSU_VERSION on 127.0.0.1:$PORT (memory storage); work dir $WORK_DIR"

# --- The measurement ------------------------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STAMP=$(date +%s)
for work in "${WORKS[@]}"; do
  say "measuring work $work"
  "$SQUALL" bench kafka --brokers "127.0.0.1:$PORT" --topic "bench-$STAMP-$work" --produce --messages "$MESSAGES" \
    --partitions "$PARTITIONS" --value-size "$VALUE_SIZE" --rounds "$ROUNDS" --bolt-tasks "$BOLT_TASKS" \
    --work "$work" --json "$WORK_DIR/kafka-$work.json" >"$WORK_DIR/summary-$work.txt"
done
TANSU_CPU=$(cpu_seconds "$TANSU_PID")

echo
echo "Consume and count from $TANSU_VERSION (memory storage) on 127.0.0.1: bare rdkafka consumer vs Squall"
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))," \
  "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load average $LOAD_BEFORE at the start," \
  "$(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "squall $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes')" \
  "(release); tansu used ${TANSU_CPU} s of CPU in all"
for work in "${WORKS[@]}"; do
  echo
  cat "$WORK_DIR/summary-$work.txt"
done
