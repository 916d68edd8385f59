#!/bin/sh
# tests/compile/primal_guard.sh SOURCE INCLUDE_DIR CC [CC ARGS...]: compiles SOURCE
# (primal_guard.c) with CASE=0, which must succeed without a warning, and with each
# CASE=1..CASES, which must fail with the _Generic error of AD_PRIMAL. The failing
# cases turn incompatible-pointer warnings (an error by default in GCC 14 and recent
# clang) off, so they fail only because of the guard: remove it and this test fails.
set -u
src=$1 inc=$2
shift 2
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
if ! "$@" -std=c11 -Wall -Wextra -Wpedantic -Werror -I"$inc" -DCASE=0 -c "$src" \
    -o "$tmp/ok.o"; then
    echo "primal guard: the right calls (CASE 0) do not compile cleanly"
    exit 1
fi
cases=$(sed -n 's/^#define CASES \([0-9][0-9]*\)$/\1/p' "$src")
[ -n "$cases" ] || { echo "primal guard: no '#define CASES N' in $src"; exit 1; }
failed=0
c=1
while [ "$c" -le "$cases" ]; do
    call=$(sed -n "/^#elif CASE == $c\$/{n;s/^ *//;p;}" "$src")
    if "$@" -std=c11 -Wno-incompatible-pointer-types \
        -Wno-incompatible-function-pointer-types -I"$inc" -DCASE="$c" -c "$src" \
        -o "$tmp/bad.o" 2>"$tmp/err"; then
        echo "primal guard: case $c compiled, but must not: $call"
        failed=1
    elif ! grep -qi 'generic' "$tmp/err"; then
        echo "primal guard: case $c failed, but not at the guard: $call"
        cat "$tmp/err"
        failed=1
    else
        echo "primal guard: case $c refused at compile time: $call"
    fi
    c=$((c + 1))
done
exit $failed
