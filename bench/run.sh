#!/usr/bin/env bash
# bench/run.sh [N]: sluice against BullMQ on the same no-op workload.
#
# Builds sluice in Release (in build-release/, or $SL_BENCH_BUILD), runs
# bench/sluice_bench with 1 and with 2 worker processes on N items (default
# 100000), and, when node and npm are on the PATH, installs the BullMQ peer
# (bench/peers/bullmq) and runs it with one Worker against a private
# redis-server started with the same flags sluice_bench's private server gets.
# Then prints a side-by-side table: submit items/s, processing items/s, Redis
# commands per item (inner commands of FCALL/EVALSHA included) and the
# server's used_memory peak.
#
# Every run gets its own fresh redis-server on a unix socket in a temp dir;
# they and the temp dirs are removed at the end, also on Ctrl-C. Figures are
# printed, never checked: the exit status says only whether the runs worked.
#
# Environment: SL_BENCH_BUILD (build dir), SL_BENCH_CONCURRENCY (slots per
# worker, default 200), SL_BENCH_SKIP_PEERS=1 (sluice only).
set -euo pipefail

N=${1:-100000}
C=${SL_BENCH_CONCURRENCY:-200}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=${SL_BENCH_BUILD:-$ROOT/build-release}

if ! [[ $N =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: bench/run.sh [ITEMS]   (ITEMS a positive integer, default 100000)" >&2
  exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-XXXXXX")
REDIS_PID=""

cleanup() {
  if [[ -n $REDIS_PID ]]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted; cleaning up" >&2; exit 130' INT TERM

# The value of a number field in a one-line JSON object ("" when absent).
jget() {
  sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2"
}

# ---- Build ----
echo "== building sluice (Release) in $BUILD" >&2
if ! { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSL_BUILD_BENCH=ON -DSL_BUILD_TESTS=OFF &&
       cmake --build "$BUILD" -j2 --target sluice_bench; } >"$TMP/build.log" 2>&1; then
  cat "$TMP/build.log" >&2
  echo "run.sh: build failed" >&2
  exit 1
fi
BENCH="$BUILD/bench/sluice_bench"

echo "== machine: $(nproc) cores, $(redis-server --version | sed 's/ sha=.*//')" >&2

# ---- sluice, 1 and 2 workers ----
declare -A RES
for w in 1 2; do
  echo "== sluice_bench --items $N --workers $w --concurrency $C" >&2
  if "$BENCH" --items "$N" --workers "$w" --concurrency "$C" >"$TMP/sluice-$w.out"; then
    cat "$TMP/sluice-$w.out"
    RES[sluice$w]=$(tail -n 1 "$TMP/sluice-$w.out")
  else
    rc=$?
    cat "$TMP/sluice-$w.out"
    echo "run.sh: sluice_bench with $w worker(s) failed (exit $rc)" >&2
    if [[ $rc -ge 128 ]]; then exit "$rc"; fi
  fi
done

# ---- BullMQ, 1 worker ----
start_redis() {
  local dir=$1
  mkdir -p "$dir"
  # The flags sl_devredis_start uses (src/cli/devredis.c). setsid: a Ctrl-C
  # at the terminal reaches this script, which stops the server itself.
  setsid redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --dir "$dir" \
    --logfile "$dir/redis.log" --save "" --appendonly no --maxmemory-policy noeviction \
    --daemonize no </dev/null &
  REDIS_PID=$!
  for _ in $(seq 1 1000); do
    if command -v redis-cli >/dev/null; then
      [[ $(redis-cli -s "$dir/redis.sock" ping 2>/dev/null) == PONG ]] && return 0
    elif [[ -S $dir/redis.sock ]]; then
      return 0
    fi
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.01
  done
  echo "run.sh: redis-server did not start; see $dir/redis.log:" >&2
  cat "$dir/redis.log" >&2 || true
  return 1
}

if [[ ${SL_BENCH_SKIP_PEERS:-0} == 1 ]]; then
  echo "== BullMQ peer skipped (SL_BENCH_SKIP_PEERS=1)" >&2
elif command -v node >/dev/null && command -v npm >/dev/null; then
  echo "== installing the BullMQ peer (npm install in bench/peers/bullmq)" >&2
  if (cd "$HERE/peers/bullmq" && npm install --no-audit --no-fund --loglevel=error) >"$TMP/npm.log" 2>&1; then
    start_redis "$TMP/redis-bullmq"
    echo "== node bench.js --items $N --concurrency $C (node $(node --version))" >&2
    if node "$HERE/peers/bullmq/bench.js" --socket "$TMP/redis-bullmq/redis.sock" --items "$N" \
         --concurrency "$C" >"$TMP/bullmq.out"; then
      cat "$TMP/bullmq.out"
      RES[bullmq]=$(tail -n 1 "$TMP/bullmq.out")
    else
      rc=$?
      cat "$TMP/bullmq.out"
      echo "run.sh: the BullMQ peer failed (exit $rc)" >&2
      if [[ $rc -ge 128 ]]; then exit "$rc"; fi
    fi
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  else
    cat "$TMP/npm.log" >&2
    echo "run.sh: npm install failed; BullMQ peer skipped" >&2
  fi
else
  echo "== node/npm not found: BullMQ peer skipped" >&2
fi

# ---- The table ----
cell() { # cell KEY RESULT FORMAT
  local v
  if [[ -z $2 ]]; then
    printf '%s' "-"
    return
  fi
  v=$(jget "$1" "$2")
  if [[ -z $v ]]; then
    printf '%s' "-"
  else
    # shellcheck disable=SC2059
    printf "$3" "$v"
  fi
}
mib() { # used_memory_peak in MiB
  local v
  v=$(jget used_memory_peak_bytes "$1")
  if [[ -z $v ]]; then printf '%s' "-"; else awk -v b="$v" 'BEGIN { printf "%.1f", b / 1048576 }'; fi
}

echo
echo "N = $N items, concurrency $C per worker, Redis $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/'), $(nproc) cores"
fmt='%-34s %18s %18s %18s\n'
# shellcheck disable=SC2059
printf "$fmt" "" "sluice 1 worker" "sluice 2 workers" "BullMQ 1 worker"
s1=${RES[sluice1]:-}
s2=${RES[sluice2]:-}
bq=${RES[bullmq]:-}
for row in "submit items/s|submit_items_per_s|%.0f" \
           "processing items/s|process_items_per_s|%.0f" \
           "Redis commands/item, submit|cmds_per_item_submit|%.2f" \
           "Redis commands/item, processing|cmds_per_item_process|%.2f" \
           "Redis commands/item, total|cmds_per_item_total|%.2f"; do
  IFS='|' read -r label key f <<<"$row"
  # shellcheck disable=SC2059
  printf "$fmt" "$label" "$(cell "$key" "$s1" "$f")" "$(cell "$key" "$s2" "$f")" "$(cell "$key" "$bq" "$f")"
done
# shellcheck disable=SC2059
printf "$fmt" "Redis used_memory peak, MiB" "$(mib "$s1")" "$(mib "$s2")" "$(mib "$bq")"
echo "(commands counted by INFO commandstats, including those run inside FCALL/EVALSHA)"
