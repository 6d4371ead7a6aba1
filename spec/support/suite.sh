#!/bin/sh
# Run busted once per Lua given (lua5.4, luajit), each against its build,
# then print one closing line for all runs: "N passed, N failed, N skipped".
# Usage: sh spec/support/suite.sh lua5.4 luajit
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
for lua in "$@"; do
  case "$lua" in
    luajit) build=luajit ;;
    *) build=5.4 ;;
  esac
  echo "== busted --lua=$lua"
  LUA_CPATH="$root/build/$build/?.so;;" ${BUSTED:-busted} --lua="$lua" "$root/spec" >"$log.out" 2>&1 || status=1
  cat "$log.out"
  grep -a -E '^[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log.out" >>"$log" || status=1
  rm -f "$log.out"
done
awk '{ passed += $1; failed += $4 + $7; skipped += $10 }
     END { printf "%d passed, %d failed, %d skipped\n", passed, failed, skipped }' "$log"
exit $status
