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

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# start_example ORIGIN_COMMAND...: the origin on ORIGIN_PORT, Holdfast in front of it (with
# the configuration file HOLDFAST_CONFIG, when set).
start_example() {
  local bin routes
  bin="$(holdfast_bin)"
  routes="$(mktemp)"
  echo "* 127.0.0.1:$ORIGIN_PORT${TARGET_OPTIONS:-}" > "$routes"
  "$@" &
  pids+=($!)
  "$bin" ${HOLDFAST_CONFIG:+--config "$HOLDFAST_CONFIG"} --routes "$routes" --listen "127.0.0.1:$HOLDFAST_PORT" \
    --publish-listen "127.0.0.1:$PUBLISH_PORT" --log-level warn &
  pids+=($!)
  echo "open http://127.0.0.1:$HOLDFAST_PORT/ (Ctrl-C stops the example)"
  wait -n "${pids[@]}"
}
