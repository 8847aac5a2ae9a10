#!/bin/sh
# test-asan.sh — every Criterion suite and the tools they run (./train, ./eval,
# ./predict) built with AddressSanitizer + UBSan in build/asan/ (gcc, like the ordinary
# build), run from build/asan/run/ where those are the sanitized binaries. Any sanitizer report fails the run: reports go to files, so
# those of ./train children and of leaks found at a process's exit count as well.
set -e
cd "$(dirname "$0")/.."
B=build/asan
export CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
export LDFLAGS="-fsanitize=address,undefined"
tests=$(ls tests/test_*.c | sed "s|^tests/\(.*\)\.c$|\1|")
make --no-print-directory CUDA=0 BUILD=$B $B/bin/train $B/bin/eval $B/bin/predict $(for t in $tests; do echo $B/tests/$t; done)

mkdir -p $B/run
ln -sfn ../../../configs $B/run/configs
ln -sfn ../../../tests $B/run/tests
for t in train eval predict; do ln -sfn ../bin/$t $B/run/$t; done
rm -rf $B/reports && mkdir -p $B/reports
# allocator_may_return_null: some suites check that a huge allocation fails cleanly
export ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1:log_path=$PWD/$B/reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$PWD/$B/reports/ubsan"
status=0
(cd $B/run && sh ../../../scripts/run-tests.sh $(for t in $tests; do echo ../tests/$t; done)) || status=1
sh scripts/sanitizer-reports.sh test-asan $B/reports || status=1
[ $status = 0 ] && echo "test-asan: all suites passed, no sanitizer reports"
exit $status
