#!/usr/bin/env bash
# Start redis-server, one Celery worker and the API on loopback, run a command
# against them, and stop all three. With a .json file as the only argument the
# command is `saddle submit FILE`; otherwise the arguments are the command, run
# with SADDLE_API_URL set (for example: saddle sweep examples/sweeps/census.json).
# Logs go to .run/; ports are free ones chosen at start.
set -euo pipefail

VENV=${VENV:-.venv}
BIN="$VENV/bin"
if [ $# -eq 0 ]; then
  set -- examples/digits-mlp.json
fi
if [ $# -eq 1 ] && [[ $1 == *.json ]]; then
  set -- "$VENV/bin/saddle" submit "$1"
fi
RUN_DIR=.run
mkdir -p "$RUN_DIR"

free_port() {
  "$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pids=()
# Stop in reverse order, each before the next, so the worker acknowledges its
# last task while Redis still accepts commands.
stop_all() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap stop_all EXIT INT TERM

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$RUN_DIR" --logfile redis.log &
pids+=($!)
export REDIS_URL="redis://127.0.0.1:$redis_port/0"

"$BIN/celery" -A worker.celery_app worker --loglevel INFO --concurrency 1 \
  --queues any,cpu,cuda --hostname "demo@%h" >"$RUN_DIR/worker.log" 2>&1 &
pids+=($!)

api_port=$(free_port)
"$BIN/uvicorn" service.main:app --host 127.0.0.1 --port "$api_port" \
  >"$RUN_DIR/api.log" 2>&1 &
pids+=($!)
export SADDLE_API_URL="http://127.0.0.1:$api_port"

echo "redis on :$redis_port, API on :$api_port; logs in $RUN_DIR/"
for _ in $(seq 1 120); do
  if "$BIN/python" - <<PY 2>/dev/null; then break; fi
import httpx, sys
sys.exit(httpx.get("$SADDLE_API_URL/readyz", timeout=1).status_code != 200)
PY
  sleep 0.5
done
"$BIN/python" -c "import httpx; r = httpx.get('$SADDLE_API_URL/readyz'); print('readyz:', r.status_code, r.json()['status'])"

export PATH="$BIN:$PATH"
"$@"
