#!/bin/sh
# fuzz.sh [TARGET...] — builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang,
# ASan and UBSan in build/fuzz/, refreshes the seed corpora in tests/corpus/, and runs
# each target for FUZZ_SECONDS (default 60). New inputs collect in build/fuzz/corpus/,
# crashes in build/fuzz/crashes/<target>/: fix the bug, then keep the input in
# tests/corpus/regressions/<target>/ (tests/test_regressions.c replays it).
# Prints one line per target (executions, coverage) and a total; exits 1 if any target failed.
# CI-sized run: FUZZ_SECONDS=3 make fuzz. The seeds program comes from the ordinary build:
# make's BUILD and CUDA, when given (make CUDA=0 BUILD=build-cpu fuzz), say which.
set -e
cd "$(dirname "$0")/.."
sh scripts/setup.sh clang libclang-rt-14-dev
SECS=${FUZZ_SECONDS:-60}
case $SECS in ''|*[!0-9]*|0) echo "fuzz: FUZZ_SECONDS must be a whole number of seconds > 0, not '$SECS'" >&2; exit 2;; esac
TARGETS=${*:-config checkpoint idx packed image metrics}
B=build/fuzz
LIBS="-fopenmp -lopenblas -lstb -lz -lm -lpthread"
STB=$(pkg-config --cflags stb 2>/dev/null || true)
mkdir -p $B
start=$(date +%s)

# Seeds come from tests/fuzz/seeds.c, built against the ordinary library ($BUILD: make
# exports a BUILD given on its command line; CUDA travels in MAKEFLAGS).
OB=${BUILD:-build}
make --no-print-directory BUILD=$OB $OB/fuzz-seeds
$OB/fuzz-seeds tests/corpus

# The library with coverage for the fuzzer. The code is kept warning-free for gcc's
# -Werror; clang warns about other things (GCC pragmas, loop analysis), so clang's driver
# appends -Wno-error to each command here (CCC_OVERRIDE_OPTIONS, "#" = quietly), and
# -Wno-pass-failed: at -O1 clang leaves the '#pragma omp simd' loops scalar, 20 warnings.
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CCC_OVERRIDE_OPTIONS="# +-Wno-error +-Wno-pass-failed" CFLAGS="-O1 -g $SAN -fsanitize=fuzzer-no-link" \
  make --no-print-directory CC=clang CUDA=0 BUILD=$B $B/libnostall.a
# stb_image reads an empty IDAT chunk as memcpy(NULL + 0, src, 0): UBSan's pointer-overflow
# and nonnull-attribute, harmless (docs/reliability.md). Those two checks are off for stb.
clang -O1 -g $SAN -fno-sanitize=pointer-overflow,nonnull-attribute -fsanitize=fuzzer-no-link $STB \
      -c tests/fuzz/stb_impl.c -o $B/stb_impl.o

for t in $TARGETS; do
  clang -O1 -g -std=c11 -D_GNU_SOURCE $SAN -fsanitize=fuzzer -Iinclude $STB \
        tests/fuzz/fuzz_$t.c $B/stb_impl.o $B/libnostall.a $LIBS -o $B/fuzz_$t
done
built=$(date +%s)

# One line per target: ok or FAIL (a crash, a leak, a timeout, out of memory), executions,
# seconds, coverage at the end; a failure's report follows its line.
# -timeout=25: instrumented, the largest image a 4 KiB input may promise (67 Mpixel, see
# src/data/folder.c) takes about 10 s to decode and resize.
failed="" total=0 n=0
for t in $TARGETS; do
  mkdir -p $B/corpus/$t $B/crashes/$t
  dirs="$B/corpus/$t tests/corpus/$t"
  [ -d tests/corpus/regressions/$t ] && dirs="$dirs tests/corpus/regressions/$t"
  t0=$(date +%s) status=ok
  $B/fuzz_$t -max_total_time=$SECS -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix=$B/crashes/$t/ $dirs > $B/fuzz_$t.log 2>&1 || status=FAIL
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' $B/fuzz_$t.log)
  last=$(grep -E "^#[0-9]+" $B/fuzz_$t.log | tail -1 | grep -o "cov: [0-9]* ft: [0-9]* corp: [^ ]*" || true)
  printf "fuzz_%-10s %-5s %9s executions in %3d s, %s (log %s)\n" \
         $t $status "${execs:-?}" $(($(date +%s) - t0)) "${last:-no coverage line}" $B/fuzz_$t.log
  total=$((total + ${execs:-0})) n=$((n + 1))
  if [ $status != ok ]; then
    failed="$failed $t"
    grep -A20 -m1 "ERROR:\|runtime error\|fuzz $t:" $B/fuzz_$t.log || tail -20 $B/fuzz_$t.log
  fi
done
end=$(date +%s)
echo "fuzz: $n targets, $SECS s each, $total executions, failed:${failed:- none};" \
     "$((end - start)) s in all ($((built - start)) s building)"
[ -z "$failed" ] || { echo "fuzz: the inputs that failed are in $B/crashes/<target>/"; exit 1; }
