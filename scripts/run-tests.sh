#!/bin/sh
# run-tests.sh SUITE... — runs every Criterion suite, prints a summary, fails if any failed.
failed=""
for t in "$@"; do
  echo "== $t"
  "$t" --jobs 1 || failed="$failed $(basename "$t")"
done
if [ -n "$failed" ]; then
  echo "FAILED suites:$failed"
  exit 1
fi
echo "all $# suites passed"
