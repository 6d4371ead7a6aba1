#!/bin/sh
# `make demo`: clone a voice and speak. With FISH_API_KEY set it talks to
# https://api.fish.audio (or FISH_BASE_URL); otherwise it starts the bundled
# local Fish-compatible server on a free loopback port and stops it after.
set -eu
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}
OUT=${FISH_DEMO_OUT:-build/demo}
mkdir -p "$OUT"

if [ -z "${FISH_API_KEY:-}" ]; then
  log=$(mktemp)
  fifo=$(mktemp -u)
  mkfifo "$fifo"
  /usr/bin/python3 spec/support/fish_server.py --port 0 --api-key demo-key --train-delay 2 >"$fifo" 2>"$log" &
  server=$!
  trap 'kill $server 2>/dev/null; rm -f "$fifo" "$log"' EXIT INT TERM
  read -r word port <"$fifo"
  [ "$word" = LISTENING ] || { echo "local server failed to start:" >&2; cat "$log" >&2; exit 1; }
  echo "demo: no FISH_API_KEY, using the bundled local server on 127.0.0.1:$port"
  export FISH_API_KEY=demo-key FISH_BASE_URL="http://127.0.0.1:$port"
else
  echo "demo: using ${FISH_BASE_URL:-https://api.fish.audio}"
fi

for example in oneshot persistent live; do
  [ -f "examples/$example.lua" ] || continue
  ext=mp3
  "$LUA" "examples/$example.lua" "$OUT/$example.$ext"
done
ls -l "$OUT"
