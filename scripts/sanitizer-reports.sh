#!/bin/sh
# sanitizer-reports.sh NAME DIR — prints the sanitizer reports the run left in DIR
# (ASAN_OPTIONS/TSAN_OPTIONS log_path) and fails when there is any; NAME prefixes the
# summary line. Used by test-asan.sh and test-tsan-cuda.sh.
name=$1 dir=$2
[ -z "$(ls "$dir")" ] && exit 0
for r in "$dir"/*; do echo "== $r"; head -80 "$r"; done
echo "$name: sanitizer reports above ($(ls "$dir" | wc -l) files in $dir)"
exit 1
