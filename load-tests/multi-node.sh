#!/usr/bin/env bash
# Scenario 5, many nodes: starts its own redis-server on a free port and N Parley nodes behind it
# (release build, each on its own port and data directory, `--redis`), plays a scenario against
# them, and with --single also against one node without Redis, alternating (M S M S ...), then
# prints the ratios (`parley-load compare --baseline single`). Everything it starts, it stops
# (trap), also on Ctrl-C; every wait is bounded.
#
#   load-tests/multi-node.sh SCENARIO [--nodes N] [--rounds R] [--single] [--shards] [--pin]
#                            [--out DIR] [--no-build] [-- extra parley-load run flags]
#
#   --nodes N    Parley nodes (default 2). With `placement = "split"` (multi-node.toml) agents
#                go to the first node and visitors to the others, so every message crosses nodes
#   --rounds R   rounds (default 1)
#   --single     also one node without Redis, same scenario, alternating with the nodes
#   --shards     one generator process per node, started together: process i plays
#                `--shard i/N` against node i alone (its --url and --server-pid), then the
#                reports are combined with `parley-load merge`. For runs over the 20,000 open
#                files one process may hold (the 100,000-socket idle run)
#   --pin        servers (nodes, Redis) on core 0, generators on core 1 (taskset)
#   --out DIR    reports, charts and logs (default load-tests/results/multi-SCENARIO-TIMESTAMP)
#   --no-build   use the release binaries already in target/release
#   BENCH_PARLEY_BIN, BENCH_LOAD_BIN environment: other parley and parley-load binaries
#   after --     passed to every `parley-load run` (e.g. --visitors 100000 --source-addresses 4)
#
# The generator watches every node and Redis (--server-pid), so the report has each one's CPU
# and RSS. Each node keeps its own SQLite file (Parley warns: production nodes share PostgreSQL);
# the figures are about delivery across nodes, not about the store.
#
# Examples:
#   load-tests/multi-node.sh load-tests/scenarios/multi-node.toml --nodes 2 --rounds 2 --single --pin
#   load-tests/multi-node.sh load-tests/scenarios/idle.toml --nodes 6 --shards \
#       -- --visitors 100000 --source-addresses 2 --arrival-rate 500
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scenario=""
nodes=2
rounds=1
single=0
shards=0
pin=0
out=""
build=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --single) single=1; shift ;;
    --shards) shards=1; shift ;;
    --pin) pin=1; shift ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) if [ -z "$scenario" ]; then scenario=$1; shift; else echo "unknown argument: $1" >&2; exit 2; fi ;;
  esac
done
[ -n "$scenario" ] && [ -f "$scenario" ] || { echo "usage: $0 SCENARIO.toml [options] (see --help)" >&2; exit 2; }
[ "$nodes" -ge 1 ] || { echo "--nodes must be at least 1" >&2; exit 2; }
name=$(basename "$scenario" .toml)
out=${out:-load-tests/results/multi-$name-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

agents_flag=()
for ((i = 0; i < ${#extra[@]}; i++)); do
  if [ "${extra[$i]}" = "--agents" ]; then agents_flag=(--agents "${extra[$((i + 1))]}"); fi
done

if [ "$build" = 1 ]; then
  echo "[multi] building release binaries"
  cargo build --release --quiet -p parley -p parley-load
fi
parley_bin=${BENCH_PARLEY_BIN:-$root/target/release/parley}
load_bin=${BENCH_LOAD_BIN:-$root/target/release/parley-load}

server_cpu=(); gen_cpu=()
if [ "$pin" = 1 ]; then
  server_cpu=(taskset -c 0); gen_cpu=(taskset -c 1)
fi

# Everything started here, stopped in reverse order, each before the next: TERM, up to 15 s,
# then KILL. The nodes go before Redis, so that they drain with Redis still answering.
pids=()
stop_all() {
  local pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[$i]}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

# Ports below the ephemeral range (32768-60999), so the generator's sockets cannot take them.
next_port=19400
free_port() {
  while [ "$next_port" -lt 32000 ]; do
    next_port=$((next_port + 1))
    if ! ss -Htln "sport = :$next_port" | grep -q .; then
      echo "$next_port"
      return 0
    fi
  done
  echo "[multi] no free port" >&2
  return 1
}

wait_for() {
  local what=$1 pid=$2; shift 2
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { echo "[multi] $what exited; see its log in $out" >&2; return 1; }
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "[multi] $what did not become ready" >&2
  return 1
}

# Starts redis-server and the nodes; sets redis_pid, node_pids, node_urls.
start_cluster() {
  local run=$1 count=$2 with_redis=$3
  node_pids=(); node_urls=(); redis_pid=""; redis_port=""
  local redis_flag=()
  if [ "$with_redis" = 1 ]; then
    local rport
    rport=$(free_port)
    redis_port=$rport
    "${server_cpu[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
      --maxclients 10000 > "$out/$run.redis.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    wait_for "redis-server" "$redis_pid" redis-cli -p "$rport" ping
    redis_flag=(--redis "redis://127.0.0.1:$rport")
  fi
  for i in $(seq 1 "$count"); do
    local port
    port=$(free_port)
    rm -rf "$out/data-$i"
    (cd "$out" && exec "${server_cpu[@]}" "$parley_bin" serve --listen "127.0.0.1:$port" \
      --data-dir "$out/data-$i" --config "$out/parley.toml" "${redis_flag[@]}") \
      > "$out/$run.node$i.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    wait_for "node $i" "$pid" curl -fs "http://127.0.0.1:$port/readyz"
    node_pids+=("$pid")
    node_urls+=("ws://127.0.0.1:$port")
  done
  echo "[multi] $run: ${#node_pids[@]} node(s) ${node_pids[*]}${redis_pid:+, redis-server $redis_pid}"
}

# One generator for all nodes, or one per node (--shards), then merged.
play() {
  local run=$1 label=$2
  local watch=()
  for pid in "${node_pids[@]}"; do watch+=(--server-pid "$pid"); done
  [ -n "$redis_pid" ] && watch+=(--server-pid "$redis_pid")
  if [ "$shards" = 0 ] || [ "${#node_pids[@]}" = 1 ]; then
    local urls=()
    for url in "${node_urls[@]}"; do urls+=(--url "$url"); done
    "${gen_cpu[@]}" "$load_bin" run "$scenario" --target parley --label "$label" "${urls[@]}" \
      "${watch[@]}" --json "$out/$run.json" --chart "$out/$run.svg" "${extra[@]}" \
      | tee "$out/$run.txt"
    return
  fi
  local n=${#node_pids[@]} gens=() parts=()
  for i in $(seq 1 "$n"); do
    "${gen_cpu[@]}" "$load_bin" run "$scenario" --target parley --label "$label" --quiet \
      --shard "$i/$n" --url "${node_urls[$((i - 1))]}" --server-pid "${node_pids[$((i - 1))]}" \
      --json "$out/$run.shard$i.json" --chart "$out/$run.shard$i.svg" "${extra[@]}" \
      > "$out/$run.shard$i.txt" 2>&1 &
    gens+=($!)
    pids+=($!)
    parts+=("$out/$run.shard$i.json")
  done
  local failed=0
  for pid in "${gens[@]}"; do wait "$pid" || failed=1; done
  # Reaped: drop them from the list, so that stop_all never signals a recycled pid.
  local keep=()
  for pid in "${pids[@]}"; do [[ " ${gens[*]} " == *" $pid "* ]] || keep+=("$pid"); done
  pids=("${keep[@]}")
  [ "$failed" = 0 ] || echo "[multi] a generator failed; see $out/$run.shard*.txt" >&2
  "$load_bin" merge "${parts[@]}" -o "$out/$run.json"
  for i in $(seq 1 "$n"); do
    echo "--- shard $i/$n (node $i)"
    grep -E "sockets|connections|RSS|per connection|errors" "$out/$run.shard$i.txt" || true
  done | tee "$out/$run.txt"
  # The Redis server's CPU and RSS are not in the shards' reports (each watched its node).
  [ -n "$redis_pid" ] && ps -o pid,rss,cputime,comm -p "$redis_pid" | tee -a "$out/$run.txt"
}

# Where Redis spent its time over the run: the commands by total time (INFO commandstats), and
# the slowest calls (SLOWLOG, over 10 ms by default), kept next to the report.
redis_profile() {
  local run=$1
  [ -n "$redis_port" ] || return 0
  redis-cli -p "$redis_port" INFO commandstats > "$out/$run.redis-commandstats.txt" || return 0
  redis-cli -p "$redis_port" SLOWLOG GET 10 > "$out/$run.redis-slowlog.txt" || true
  echo "--- redis: commands by total time (calls, µs per call) ---" | tee -a "$out/$run.txt"
  tr -d '\r' < "$out/$run.redis-commandstats.txt" | awk -F'[:=,]' '/^cmdstat_/ {
      printf "%-24s %10d calls %10.1f µs/call %8.2f s\n", substr($1, 9), $3, $7, $5 / 1e6 }' \
    | sort -k6 -rn | head -8 | tee -a "$out/$run.txt"
}

"$load_bin" parley-config "$scenario" "${agents_flag[@]}" > "$out/parley.toml"
for round in $(seq 1 "$rounds"); do
  start_cluster "nodes-$round" "$nodes" 1
  play "nodes-$round" "nodes$nodes"
  redis_profile "nodes-$round"
  stop_all
  if [ "$single" = 1 ]; then
    start_cluster "single-$round" 1 0
    play "single-$round" single
    stop_all
  fi
done

echo
if [ "$single" = 1 ]; then
  "$load_bin" compare "$out"/nodes-[0-9]*.json "$out"/single-[0-9]*.json --baseline single \
    --chart "$out/compare.svg" | tee "$out/compare.txt"
fi
echo "[multi] reports, charts and logs in $out"
