# Shared by the examples' run scripts: finds or builds the holdfast binary, starts it and an
# origin, and stops both on exit. Ports come from the environment so that examples/test can run
# them side by side: HOLDFAST_PORT (7999), PUBLISH_PORT (5561), ORIGIN_PORT (8000).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOLDFAST_PORT="${HOLDFAST_PORT:-7999}"
PUBLISH_PORT="${PUBLISH_PORT:-5561}"
ORIGIN_PORT="${ORIGIN_PORT:-8000}"
export HOLDFAST_PORT PUBLISH_PORT ORIGIN_PORT
export PUBLISH_URL="http://127.0.0.1:$PUBLISH_PORT"

holdfast_bin() {
  if [ -n "${HOLDFAST_BIN:-}" ]; then
    echo "$HOLDFAST_BIN"
  elif command -v holdfast >/dev/null 2>&1; then
    command -v holdfast
  else
    (cd "$repo" && cargo build --release --quiet -p holdfast) >&2
    echo "$repo/target/release/holdfast"
  fi
}

# python_env: the examples' Python packages (examples/requirements.txt) in a venv under
# target/examples-venv, made or remade when the file changes; prints the venv's python.
python_env() {
  local venv="$repo/target/examples-venv" want
  want="$(sha256sum "$repo/examples/requirements.txt" | cut -d' ' -f1)"
  if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
    echo "installing examples/requirements.txt into $venv" >&2
    python3 -m venv --clear "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$repo/examples/requirements.txt" >&2
    echo "$want" >"$venv/.requirements.sha256"
  fi
  echo "$venv/bin/python"
}

# node_env: the examples' Node packages (examples/package-lock.json) in examples/node_modules.
node_env() {
  if [[ ! -d "$repo/examples/node_modules/@fanoutio/serve-grip" || ! -d "$repo/examples/node_modules/faye" ]]; then
    (cd "$repo/examples" && npm ci --loglevel=error --no-audit --no-fund) >&2
  fi
}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# start_example ORIGIN_COMMAND...: the origin on ORIGIN_PORT, Holdfast in front of it (with the
# configuration file HOLDFAST_CONFIG, when set), on a route with ROUTE_OPTIONS
# (",bayeux=/bayeux") and a target with TARGET_OPTIONS (",over_http").
start_example() {
  local bin routes
  bin="$(holdfast_bin)"
  routes="$(mktemp)"
  echo "*${ROUTE_OPTIONS:-} 127.0.0.1:$ORIGIN_PORT${TARGET_OPTIONS:-}" > "$routes"
  "$@" &
  pids+=($!)
  "$bin" ${HOLDFAST_CONFIG:+--config "$HOLDFAST_CONFIG"} --routes "$routes" --listen "127.0.0.1:$HOLDFAST_PORT" \
    --publish-listen "127.0.0.1:$PUBLISH_PORT" --log-level warn &
  pids+=($!)
  echo "open http://127.0.0.1:$HOLDFAST_PORT/ (Ctrl-C stops the example)"
  wait -n "${pids[@]}"
}
