#!/usr/bin/env bash
# bench/http.sh [N] [SLOTS] [HOLD_MS]: http items through one worker.
#
# Builds sluice in Release (build-release/, or $SL_BENCH_BUILD), starts a
# private redis-server and the local test HTTP server
# (tests/integration/http_server.py: a threaded HTTP/1.1 server on plain
# http, each request to /hold held HOLD_MS), runs one worker with SLOTS
# slots and the default --http-version, then again with --http-version 1.1,
# and prints for each: items/s (N over the batch's first start to its end,
# from `sluice status --json`), the most requests in flight at the server at
# once, and the worker's peak RSS (VmHWM). Defaults: N 20000, SLOTS 500,
# HOLD_MS 100, so 500 slots allow at most 5,000 items/s.
#
# The Python server is the likely bottleneck at high rates, not the worker.
# Figures are printed, never checked. Everything started is stopped and
# removed at the end, also on Ctrl-C.
set -euo pipefail

N=${1:-20000}
SLOTS=${2:-500}
HOLD=${3:-100}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=${SL_BENCH_BUILD:-$ROOT/build-release}

for v in "$N" "$SLOTS" "$HOLD"; do
  if ! [[ $v =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bench/http.sh [ITEMS] [SLOTS] [HOLD_MS]   (positive integers)" >&2
    exit 2
  fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-http-bench-XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "http.sh: interrupted; cleaning up" >&2; exit 130' INT TERM

jget() {
  sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2"
}

echo "== building sluice (Release) in $BUILD" >&2
if ! { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSL_BUILD_TESTS=OFF &&
       cmake --build "$BUILD" -j2 --target sluice_cli; } >"$TMP/build.log" 2>&1; then
  cat "$TMP/build.log" >&2
  exit 1
fi
SLUICE="$BUILD/sluice"

setsid redis-server --port 0 --unixsocket "$TMP/redis.sock" --unixsocketperm 700 --dir "$TMP" \
  --logfile "$TMP/redis.log" --save "" --appendonly no --maxmemory-policy noeviction </dev/null &
PIDS+=($!)
for _ in $(seq 1 500); do [[ -S $TMP/redis.sock ]] && break; sleep 0.01; done
export SLUICE_REDIS="unix://$TMP/redis.sock"
"$SLUICE" library load 2>/dev/null

setsid /usr/bin/python3 "$ROOT/tests/integration/http_server.py" "$TMP/port" </dev/null &
PIDS+=($!)
for _ in $(seq 1 500); do [[ -s $TMP/port ]] && break; sleep 0.01; done
PORT=$(cat "$TMP/port")
stats() { python3 -c "import json,sys,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$PORT/stats$1'))['peak_in_flight'])"; }

python3 -c "
import sys
for i in range($N):
    sys.stdout.write('{\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:$PORT/hold?ms=$HOLD\"},\"max_attempts\":3}\n')
" >"$TMP/items.jsonl"

echo "N = $N http items held $HOLD ms each by a local plain-http HTTP/1.1 server, one worker with $SLOTS slots, $(nproc) cores"
printf '%-28s %12s %16s %16s\n' "worker setting" "items/s" "peak in flight" "worker peak RSS"
for version in default 1.1; do
  q="http-$version"
  args=(worker --queue "$q" --concurrency "$SLOTS" --quiet --http-allow "127.0.0.1:$PORT")
  [[ $version == 1.1 ]] && args+=(--http-version 1.1)
  stats "?reset_peak=1" >/dev/null
  "$SLUICE" "${args[@]}" &
  wpid=$!
  PIDS+=("$wpid")
  B=$("$SLUICE" submit --queue "$q" "$TMP/items.jsonl")
  "$SLUICE" watch --queue "$q" "$B" 2>/dev/null || true
  st=$("$SLUICE" status --queue "$q" --json "$B")
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$wpid/status")
  kill "$wpid"
  wait "$wpid" 2>/dev/null || true
  started=$(jget started_at "$st")
  finished=$(jget finished_at "$st")
  ok=$(jget succeeded "$st")
  rate=$(awk -v n="$N" -v ms=$((finished - started)) 'BEGIN { printf "%.0f", (ms > 0 ? n * 1000 / ms : 0) }')
  printf '%-28s %12s %16s %13s MB\n' "--http-version $version" "$rate" "$(stats "")" "$((hwm / 1024))"
  [[ $ok == "$N" ]] || echo "http.sh: only $ok of $N items succeeded" >&2
done
echo "(items/s: N over the batch's first start to its end; peak in flight: the most /hold requests the server held at once)"
