#!/usr/bin/env bash
# bench/scale.sh [sluice_scale options]: does any operation on a big batch
# hold Redis up?
#
# Builds sluice in Release (in build-release/, or $SL_BENCH_BUILD) and runs
# bench/sluice_scale (see the top of bench/scale.c): a 1,000,000-item batch
# paused, resumed and cancelled with four workers busy, a second one run to
# the end, retry and dead requeue of 100,000 failed items, 10 heartbeats of
# 10,000 held items, a takeover of 100,000, and `batches` over 100,000
# ended batches, each on a private redis-server, with the longest Redis
# command (SLOWLOG) and the worst PING beside it. Targets: no command over
# 20 ms, no PING over 50 ms. Figures are printed, never checked. Takes about
# five minutes on 2 cores and needs about 1 GiB of memory for Redis.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=${SL_BENCH_BUILD:-$ROOT/build-release}
LOG=$(mktemp "${TMPDIR:-/tmp}/sluice-scale-build-XXXXXX")
trap 'rm -f "$LOG"' EXIT

echo "== building sluice (Release) in $BUILD" >&2
if ! { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSL_BUILD_BENCH=ON -DSL_BUILD_TESTS=OFF &&
       cmake --build "$BUILD" -j2 --target sluice_scale; } >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "scale.sh: build failed" >&2
  exit 1
fi
echo "== machine: $(nproc) cores, $(redis-server --version | sed 's/ sha=.*//')" >&2
exec "$BUILD/bench/sluice_scale" "$@"
