#!/bin/sh
# fuzz.sh [TARGET...] — builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang,
# ASan and UBSan in build/fuzz/, refreshes the seed corpora in tests/corpus/, and runs
# each target for FUZZ_SECONDS (default 60). New inputs collect in build/fuzz/corpus/,
# crashes in build/fuzz/crashes/<target>/: fix the bug, then keep the input in
# tests/corpus/regressions/<target>/ (tests/test_regressions.c replays it).
set -e
cd "$(dirname "$0")/.."
sh scripts/setup.sh clang libclang-rt-14-dev
SECS=${FUZZ_SECONDS:-60}
TARGETS=${*:-config checkpoint idx packed image}
B=build/fuzz
LIBS="-fopenmp -lopenblas -lstb -lz -lm -lpthread"
STB=$(pkg-config --cflags stb 2>/dev/null || true)
mkdir -p $B

# Seeds come from tests/fuzz/seeds.c, built against the ordinary library.
make --no-print-directory build/fuzz-seeds
build/fuzz-seeds tests/corpus

# The library with coverage for the fuzzer. The code is kept warning-free for gcc's
# -Werror; clang warns about other things (GCC pragmas, loop analysis), so clang's driver
# appends -Wno-error to each command here (CCC_OVERRIDE_OPTIONS, "#" = quietly).
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CCC_OVERRIDE_OPTIONS="#+-Wno-error" CFLAGS="-O1 -g $SAN -fsanitize=fuzzer-no-link" \
  make --no-print-directory CC=clang CUDA=0 BUILD=$B $B/libnostall.a
# stb_image reads an empty IDAT chunk as memcpy(NULL + 0, src, 0): UBSan's pointer-overflow
# and nonnull-attribute, harmless (docs/reliability.md). Those two checks are off for stb.
clang -O1 -g $SAN -fno-sanitize=pointer-overflow,nonnull-attribute -fsanitize=fuzzer-no-link $STB \
      -c tests/fuzz/stb_impl.c -o $B/stb_impl.o

# -timeout=25: instrumented, the largest image a 4 KiB input may promise (67 Mpixel, see
# src/data/folder.c) takes about 10 s to decode and resize.
failed=""
for t in $TARGETS; do
  clang -O1 -g -std=c11 -D_GNU_SOURCE $SAN -fsanitize=fuzzer -Iinclude $STB \
        tests/fuzz/fuzz_$t.c $B/stb_impl.o $B/libnostall.a $LIBS -o $B/fuzz_$t
  mkdir -p $B/corpus/$t $B/crashes/$t
  dirs="$B/corpus/$t tests/corpus/$t"
  [ -d tests/corpus/regressions/$t ] && dirs="$dirs tests/corpus/regressions/$t"
  echo "== fuzz_$t: ${SECS}s on $dirs"
  if ! $B/fuzz_$t -max_total_time=$SECS -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix=$B/crashes/$t/ $dirs > $B/fuzz_$t.log 2>&1; then
    failed="$failed $t"
    grep -A20 -m1 "ERROR:\|runtime error\|fuzz $t:" $B/fuzz_$t.log || tail -20 $B/fuzz_$t.log
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' $B/fuzz_$t.log)
  last=$(grep -E "^#[0-9]+" $B/fuzz_$t.log | tail -1 | grep -o "cov: [0-9]* ft: [0-9]* corp: [^ ]*")
  echo "   $t: ${execs:-?} executions, $last, log $B/fuzz_$t.log"
done
[ -z "$failed" ] || { echo "fuzz: crashes in:$failed (inputs in $B/crashes/)"; exit 1; }
echo "fuzz: no crashes in $TARGETS"
