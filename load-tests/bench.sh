#!/usr/bin/env bash
# Side-by-side benchmark: runs one scenario against Parley, the bare relay (the floor) and the
# Socket.IO peer in turn, A B C A B C ..., each on a fresh server, then prints the medians and
# the ratios to the relay (`parley-load compare`). Everything it starts, it stops (trap).
#
#   load-tests/bench.sh SCENARIO [--rounds N] [--targets "parley relay socketio"] [--pin]
#                       [--out DIR] [--no-build] [-- extra parley-load run flags]
#
#   --rounds N    rounds of every target (default 2: A B A B)
#   --targets T   which servers, in order (default: all three; a scenario that needs resume
#                 runs against Parley only)
#   --pin         server on core 0, generator on core 1 (taskset): steadier on a 2-core machine
#   --out DIR     reports, charts and logs (default load-tests/results/SCENARIO-TIMESTAMP)
#   --no-build    use the release binaries already in target/release
#   after --      passed to every `parley-load run` (e.g. --visitors 200 --duration 5s)
#   BENCH_PARLEY_BIN environment: another Parley binary (e.g. a copy of an earlier build, for a
#                 before/after comparison; not PARLEY_*, which Parley reads as its configuration);
#                 default target/release/parley
#
# Example: load-tests/bench.sh load-tests/scenarios/chat-storm.toml --rounds 2 --pin
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scenario=""
rounds=2
targets=""
pin=0
out=""
build=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --pin) pin=1; shift ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) if [ -z "$scenario" ]; then scenario=$1; shift; else echo "unknown argument: $1" >&2; exit 2; fi ;;
  esac
done
[ -n "$scenario" ] && [ -f "$scenario" ] || { echo "usage: $0 SCENARIO.toml [options] (see --help)" >&2; exit 2; }
name=$(basename "$scenario" .toml)
if [ -z "$targets" ]; then
  if grep -Eq '^\s*needs_resume\s*=\s*true' "$scenario"; then
    targets="parley"
    echo "[bench] $name needs resume: Parley only (the references have no persistence or resume)"
  else
    targets="parley relay socketio"
  fi
fi
out=${out:-load-tests/results/$name-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Agents in the generated parley.toml: the scenario's, or --agents N given after --.
agents_flag=()
for ((i = 0; i < ${#extra[@]}; i++)); do
  if [ "${extra[$i]}" = "--agents" ]; then agents_flag=(--agents "${extra[$((i + 1))]}"); fi
done

if [ "$build" = 1 ]; then
  echo "[bench] building release binaries"
  cargo build --release --quiet -p parley -p parley-load
fi
parley_bin=${BENCH_PARLEY_BIN:-$root/target/release/parley}
load_bin=$root/target/release/parley-load
if [[ " $targets " == *" socketio "* ]] && [ ! -d load-tests/socketio/node_modules ]; then
  echo "[bench] installing the Socket.IO peer (npm ci)"
  (cd load-tests/socketio && npm ci --no-audit --no-fund --loglevel=error)
fi

server_cpu=(); gen_cpu=()
if [ "$pin" = 1 ]; then
  server_cpu=(taskset -c 0); gen_cpu=(taskset -c 1)
fi

server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# Waits (bounded) until the server accepts connections; Parley also until /readyz says ready.
wait_ready() {
  local port=$1 kind=$2
  for _ in $(seq 1 200); do
    kill -0 "$server_pid" 2>/dev/null || { echo "[bench] the $kind server exited; see its log" >&2; return 1; }
    if [ "$kind" = parley ]; then
      curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  echo "[bench] the $kind server did not become ready on port $port" >&2
  return 1
}

"$load_bin" parley-config "$scenario" "${agents_flag[@]}" > "$out/parley.toml"
port=19100
for round in $(seq 1 "$rounds"); do
  for target in $targets; do
    port=$((port + 1))
    run=$target-$round
    log=$out/$run.server.log
    case "$target" in
      parley)
        rm -rf "$out/data"
        (cd "$out" && exec "${server_cpu[@]}" "$parley_bin" serve --listen "127.0.0.1:$port" \
          --data-dir "$out/data" --config "$out/parley.toml") > "$log" 2>&1 &
        ;;
      relay)
        (exec "${server_cpu[@]}" "$load_bin" relay --listen "127.0.0.1:$port") > "$log" 2>&1 &
        ;;
      socketio)
        (cd load-tests/socketio && exec "${server_cpu[@]}" node server.js --listen "127.0.0.1:$port") > "$log" 2>&1 &
        ;;
      *) echo "unknown target $target" >&2; exit 2 ;;
    esac
    server_pid=$!
    wait_ready "$port" "$target"
    echo "[bench] round $round: $target (pid $server_pid, port $port)"
    "${gen_cpu[@]}" "$load_bin" run "$scenario" --target "$target" --label "$target" \
      --url "ws://127.0.0.1:$port" --server-pid "$server_pid" \
      --json "$out/$run.json" --chart "$out/$run.svg" "${extra[@]}" | tee "$out/$run.txt"
    stop_server
  done
done

echo
"$load_bin" compare "$out"/*-[0-9]*.json --baseline relay --chart "$out/compare.svg" | tee "$out/compare.txt"
echo "[bench] reports, charts and logs in $out"
