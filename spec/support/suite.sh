#!/bin/sh
# Run the busted suite once per Lua given (lua5.1 ... lua5.4, luajit), each
# against its own build, all at the same time: a run spends most of its time
# waiting on its local servers (each on its own free ports), so side by side
# they take little longer than the slowest one. Each run's output is kept in
# a file and printed whole, in the order given; then one closing line for all
# runs: "N passed, N failed, N skipped". The exit status is non-zero when a
# run failed or printed no busted summary. A run still going after
# FISH_SUITE_TIMEOUT seconds (default 900) is stopped with its children, so
# a hung spec fails the suite instead of stalling it.
# Usage: sh spec/support/suite.sh lua5.1 lua5.2 lua5.3 lua5.4 luajit
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# The build directory of each Lua, as the Makefile names it.
build_of() {
  case "$1" in
    luajit) echo luajit ;;
    lua5.[1-4]) echo "${1#lua}" ;;
    *) echo "suite.sh: unknown Lua '$1'" >&2; return 1 ;;
  esac
}

pids=""
for lua in "$@"; do
  build=$(build_of "$lua") || exit 2
  (
    LUA_CPATH="$root/build/$build/?.so;;" timeout -k 10 "${FISH_SUITE_TIMEOUT:-900}" \
      ${BUSTED:-busted} --lua="$lua" "$root/spec" >"$logs/$lua.out" 2>&1 </dev/null
    code=$?
    [ $code = 124 ] && echo "== busted --lua=$lua: stopped after ${FISH_SUITE_TIMEOUT:-900} s" >>"$logs/$lua.out"
    echo $code >"$logs/$lua.status"
  ) &
  pids="$pids $!"
done
# shellcheck disable=SC2086
wait $pids

status=0
: >"$logs/summary"
for lua in "$@"; do
  echo "== busted --lua=$lua"
  cat "$logs/$lua.out"
  [ "$(cat "$logs/$lua.status" 2>/dev/null)" = 0 ] || { status=1; echo "== busted --lua=$lua failed"; }
  # busted's own summary is its last such line (a spec's output may hold others).
  summary=$(grep -a -E '^[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' \
    "$logs/$lua.out" | tail -n 1)
  if [ -n "$summary" ]; then
    echo "$summary" >>"$logs/summary"
  else
    status=1
    echo "== busted --lua=$lua printed no summary"
  fi
done
awk '{ passed += $1; failed += $4 + $7; skipped += $10 }
     END { printf "%d passed, %d failed, %d skipped\n", passed, failed, skipped }' "$logs/summary"
exit $status
