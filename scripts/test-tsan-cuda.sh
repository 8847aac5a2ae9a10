#!/bin/sh
# test-tsan-cuda.sh — the threaded part of test_cuda (tests/tsan_cuda.c: the real
# ring in four settings, training steps on both CUDA tables) on the emulated CUDA
# device, built with ThreadSanitizer (build/tsan-emu): the streams are threads there,
# so a race between the host, the loader's workers and the device's streams (a slot
# refilled while a copy reads it, an event read without its lock) is a report. Any
# report fails the run. (Not test_cuda itself: Criterion can't start under
# ThreadSanitizer, its issue #274.)
set -e
cd "$(dirname "$0")/.."
B=build/tsan-emu
export CFLAGS="-O1 -g -fsanitize=thread -fno-omit-frame-pointer"
export LDFLAGS="-fsanitize=thread"
make --no-print-directory -s CUDA=emu BUILD=$B $B/tests/tsan_cuda
rm -rf $B/reports && mkdir -p $B/reports
export TSAN_OPTIONS="log_path=$PWD/$B/reports/tsan second_deadlock_stack=1"
status=0
$B/tests/tsan_cuda || status=1
sh scripts/sanitizer-reports.sh test-tsan-cuda $B/reports || status=1
[ $status = 0 ] && echo "test-tsan-cuda: every check passed on the emulated device, no ThreadSanitizer reports"
exit $status
