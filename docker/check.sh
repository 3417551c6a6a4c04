#!/usr/bin/env bash
# Builds the image and runs docker/compose.yml for real: Redis, the library,
# 2 workers and sluice serve come up healthy, the demo producer's 1,000
# items end, and the API and the dashboard answer. Needs a running dockerd
# and docker-compose (or `docker compose`), and the base images
# debian:bookworm and debian:bookworm-slim (the README says how to make them
# from Debian's packages where no registry is reachable). Not part of CTest:
# it builds an image (minutes) and needs the daemon.
#
# usage: docker/check.sh   (from anywhere; exit 0 when all holds)
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then dc=(docker compose); else dc=(docker-compose); fi
dc+=(-f docker/compose.yml)
trap '"${dc[@]}" --profile demo down -v >/dev/null 2>&1 || true' EXIT
docker build -q -f docker/Dockerfile -t sluice:latest . >/dev/null
[ "$(docker run --rm --entrypoint id sluice:latest -u)" = 10001 ] || { echo "not ok - the image does not run as uid 10001"; exit 1; }
"${dc[@]}" up -d --scale worker=2 >/dev/null 2>&1
for _ in $(seq 60); do
  healthy=$("${dc[@]}" ps 2>/dev/null | grep -c "(healthy)" || true)
  [ "$healthy" -ge 4 ] && break
  sleep 2
done
[ "$healthy" -ge 4 ] || { "${dc[@]}" ps; echo "not ok - redis, 2 workers and serve not healthy in 120 s"; exit 1; }
out=$("${dc[@]}" --profile demo run --rm submit 2>&1)
[[ $out == *"1000/1000"*"completed"* ]] || { echo "not ok - the demo batch: $out"; exit 1; }
list=$(curl -s -H "Authorization: Bearer compose-demo-admin" http://127.0.0.1:8080/v1/batches)
[[ $list == *'"name":"compose-demo","status":"completed","total":1000'* ]] || { echo "not ok - the API: $list"; exit 1; }
page=$(curl -s http://127.0.0.1:8080/)
[[ $page == *'<script type="module" src="/ui/app.js">'* ]] || { echo "not ok - the dashboard"; exit 1; }
echo "ok - image built (non-root), compose up: redis, library, 2 workers and serve healthy; 1,000 demo items ended; API and dashboard answer"
