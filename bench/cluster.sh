#!/usr/bin/env bash
# bench/cluster.sh [N]: noop throughput on a Redis Cluster of 1, 2 and 3
# masters, one queue per master.
#
# For each size M it starts M fresh redis-server processes in cluster mode on
# loopback ports (no replicas, no persistence: the engine, not the disk),
# assigns the slots evenly, loads the library on every master, picks one
# queue name per master (by the slot of its {queue} hash tag), submits N noop
# items to each queue (default 50000), then starts one `sluice worker` per
# queue (--concurrency 200) and waits until every batch is done.
#
# It prints, per M: the processing rate per master and in total (items/s),
# and the Redis CPU each master spent per item (used_cpu_user + sys from INFO
# cpu, before and after, in microseconds), and the workers' CPU per item
# (utime + stime from /proc, before they stop). Figures are printed, never
# checked. Every worker and server runs on this machine: with 2 cores, the
# masters and workers of M = 3 share them, so the total cannot scale
# linearly here; the CPU per item is what carries over to more machines.
#
# Environment: SL_BENCH_BUILD (build dir, default build-release).
set -euo pipefail

N=${1:-50000}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=${SL_BENCH_BUILD:-$ROOT/build-release}
SLUICE=$BUILD/sluice

if ! [[ $N =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: bench/cluster.sh [ITEMS_PER_QUEUE]   (a positive integer, default 50000)" >&2
  exit 2
fi
if [[ ! -x $SLUICE ]]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target sluice_cli >/dev/null
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-cluster-bench-XXXXXX")
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "cluster.sh: interrupted; cleaning up" >&2; exit 130' INT TERM

now_ns() { date +%s%N; }

# used_cpu_user + used_cpu_sys of the server on port $1, in microseconds.
cpu_us() {
  redis-cli -p "$1" INFO cpu | tr -d '\r' |
    awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.0f", s * 1000000}'
}

# A free base port: M ports and their bus ports (+10000) unused.
free_base() {
  local m=$1 b
  for _ in $(seq 200); do
    b=$((21000 + RANDOM % 8000))
    local ok=1
    for i in $(seq 0 $((m - 1))); do
      if (exec 3<>/dev/tcp/127.0.0.1/$((b + i))) 2>/dev/null ||
         (exec 3<>/dev/tcp/127.0.0.1/$((b + i + 10000))) 2>/dev/null; then
        ok=0
      fi
    done
    if [[ $ok == 1 ]]; then echo "$b"; return; fi
  done
  echo "cluster.sh: no free ports" >&2
  exit 1
}

run_size() {
  local m=$1 base url="" ports=() queues=() batches=() workers=()
  base=$(free_base "$m")
  for i in $(seq 0 $((m - 1))); do
    local p=$((base + i)) d="$TMP/m$m-$i"
    mkdir -p "$d"
    redis-server --port "$p" --bind 127.0.0.1 --dir "$d" --cluster-enabled yes \
      --cluster-config-file nodes.conf --save "" --appendonly no --logfile "$d/redis.log" --daemonize no \
      >/dev/null 2>&1 &
    PIDS+=($!)
    ports+=("$p")
    url+="${url:+,}127.0.0.1:$p"
  done
  for p in "${ports[@]}"; do
    for _ in $(seq 200); do redis-cli -p "$p" PING >/dev/null 2>&1 && break; sleep 0.05; done
  done
  for i in $(seq 0 $((m - 1))); do
    redis-cli -p "${ports[$i]}" CLUSTER ADDSLOTSRANGE $((i * 16384 / m)) $(((i + 1) * 16384 / m - 1)) >/dev/null
    [[ $i -gt 0 ]] && redis-cli -p "${ports[0]}" CLUSTER MEET 127.0.0.1 "${ports[$i]}" >/dev/null
  done
  for _ in $(seq 400); do
    local ok=1
    for p in "${ports[@]}"; do
      redis-cli -p "$p" CLUSTER INFO | grep -q "cluster_state:ok" || ok=0
    done
    [[ $ok == 1 ]] && break
    sleep 0.05
  done
  url="redis+cluster://$url"
  "$SLUICE" library load --redis "$url" >/dev/null 2>&1
  # one queue per master: a name whose slot that master owns
  for i in $(seq 0 $((m - 1))); do
    local lo=$((i * 16384 / m)) hi=$(((i + 1) * 16384 / m - 1)) k=0 q slot
    while :; do
      q="bench-$m-$i-$k"
      slot=$(redis-cli -p "${ports[0]}" CLUSTER KEYSLOT "{$q}")
      if ((slot >= lo && slot <= hi)); then break; fi
      k=$((k + 1))
    done
    queues+=("$q")
  done
  seq "$N" | sed 's/.*/{"type":"noop","payload":{}}/' >"$TMP/items.jsonl"
  for q in "${queues[@]}"; do
    batches+=("$("$SLUICE" submit --redis "$url" --queue "$q" "$TMP/items.jsonl" 2>/dev/null)")
  done
  local cpu0=() cpu1=() t0 t1 ends=()
  for p in "${ports[@]}"; do cpu0+=("$(cpu_us "$p")"); done
  t0=$(now_ns)
  for q in "${queues[@]}"; do
    "$SLUICE" worker --redis "$url" --queue "$q" --concurrency 200 --quiet &
    workers+=($!)
    PIDS+=($!)
  done
  for i in $(seq 0 $((m - 1))); do ends+=(0); done
  local left=$m
  while ((left > 0)); do
    for i in $(seq 0 $((m - 1))); do
      if [[ ${ends[$i]} == 0 ]]; then
        local done
        done=$(redis-cli -p "${ports[$i]}" HGET "sluice:{${queues[$i]}}:b:${batches[$i]}" done)
        if [[ $done == "$N" ]]; then
          ends[$i]=$(now_ns)
          cpu1[$i]=$(cpu_us "${ports[$i]}")
          left=$((left - 1))
        fi
      fi
    done
    sleep 0.02
  done
  t1=$(now_ns)
  # the workers' CPU (utime + stime, clock ticks) before they stop
  local wticks=0 hz
  hz=$(getconf CLK_TCK)
  for w in "${workers[@]}"; do
    wticks=$((wticks + $(awk '{print $14 + $15}' "/proc/$w/stat")))
  done
  for w in "${workers[@]}"; do kill -TERM "$w" 2>/dev/null || true; done
  for w in "${workers[@]}"; do wait "$w" 2>/dev/null || true; done
  local total per=""
  total=$(awk -v n="$((N * m))" -v ns="$((t1 - t0))" 'BEGIN {printf "%.0f", n / (ns / 1e9)}')
  for i in $(seq 0 $((m - 1))); do
    local rate cpu
    rate=$(awk -v n="$N" -v ns="$((ends[$i] - t0))" 'BEGIN {printf "%.0f", n / (ns / 1e9)}')
    cpu=$(awk -v a="${cpu0[$i]}" -v b="${cpu1[$i]}" -v n="$N" 'BEGIN {printf "%.1f", (b - a) / n}')
    per+="${per:+, }$rate/s ($cpu us CPU/item)"
  done
  local wcpu
  wcpu=$(awk -v t="$wticks" -v hz="$hz" -v n="$((N * m))" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  printf "%-8s %-12s %-10s %s\n" "$m" "$total/s" "$wcpu us" "$per"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

echo "noop items, $N per queue, one queue and one worker (--concurrency 200) per master, $(nproc) cores"
printf "%-8s %-12s %-10s %s\n" "masters" "total" "worker CPU" "per master: items/s (Redis CPU per item)"
for m in 1 2 3; do run_size "$m"; done
