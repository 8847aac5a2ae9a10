#!/bin/sh
# test-tsan-cuda.sh — test_cuda on the emulated CUDA device built with ThreadSanitizer
# (build/tsan-emu): the streams are threads there, so a race between the host, the
# loader's workers and the device's streams (a buffer read by a copy while a worker
# refills it, an event read without its lock) is a report. Any report fails the run.
set -e
cd "$(dirname "$0")/.."
B=build/tsan-emu
export CFLAGS="-O1 -g -fsanitize=thread -fno-omit-frame-pointer"
export LDFLAGS="-fsanitize=thread"
make --no-print-directory -s CUDA=emu BUILD=$B $B/tests/test_cuda
rm -rf $B/reports && mkdir -p $B/reports
export TSAN_OPTIONS="log_path=$PWD/$B/reports/tsan second_deadlock_stack=1"
status=0
NS_EMU_ORDER=forward $B/tests/test_cuda --jobs 1 || status=1
if [ -n "$(ls $B/reports)" ]; then
  for r in $B/reports/*; do echo "== $r"; head -80 "$r"; done
  echo "test-tsan-cuda: ThreadSanitizer reports above ($(ls $B/reports | wc -l) files in $B/reports)"
  status=1
fi
[ $status = 0 ] && echo "test-tsan-cuda: test_cuda passed on the emulated device, no ThreadSanitizer reports"
exit $status
