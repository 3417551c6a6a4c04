#!/usr/bin/env bash
# bench/serve.sh [N]: sluice serve measured (bench/serve_bench.py): a submit
# of N items (default 100000) through the API against `sluice submit` of the
# same file in the same run, GET /v1/batches/{id} with 50 concurrent clients,
# and 1,000 event-stream clients on one busy batch (server RSS per client,
# delivery latency p50/p99). Builds Release in build-release/ (or
# $SL_BENCH_BUILD) first. Figures are printed, never checked.
set -euo pipefail
N=${1:-100000}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=${SL_BENCH_BUILD:-$ROOT/build-release}
if ! [[ $N =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: bench/serve.sh [ITEMS]" >&2
  exit 2
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target sluice_cli >/dev/null
ulimit -n "$(ulimit -Hn)"
exec /usr/bin/python3 "$HERE/serve_bench.py" "$BUILD/sluice" "$N"
