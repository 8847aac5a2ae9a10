#!/bin/sh
# test-valgrind.sh — the smoke training run under valgrind memcheck, loader workers and
# all: one epoch that writes a checkpoint, then a --resume to the second. Fails on any
# memcheck error or a definitely-lost byte. Pixels: a seed image of the fuzz corpus,
# 16x16, which the loader resizes to smoke.cfg's 12x12. A CPU-only build (build/cpu):
# the CUDA runtime's dlopen trips memcheck inside ld.so, and smoke.cfg runs on the CPU.
set -e
cd "$(dirname "$0")/.."
sh scripts/setup.sh valgrind
make --no-print-directory CUDA=0 BUILD=build/cpu build/cpu/bin/train
D=$(mktemp -d build/valgrind-XXXXXX)
trap 'rm -rf "$D"' EXIT
for split in train:8 test:2; do
  for k in 0 1 2 3; do
    mkdir -p "$D/${split%:*}/c$k"
    for i in $(seq ${split#*:}); do cp tests/corpus/image/gray_16x16.png "$D/${split%:*}/c$k/$i.png"; done
  done
done
# one kernel thread: OpenMP/OpenBLAS pools only slow valgrind down; the loader keeps its 2 workers
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
VG="valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite"
ARGS="configs/smoke.cfg --set data.path=$D --set loader.workers=2 --set train.checkpoint=$D/run.ckpt"
$VG build/cpu/bin/train $ARGS --set train.epochs=1 > "$D/log" 2>&1 || { cat "$D/log"; echo "test-valgrind: failed (first run)"; exit 1; }
$VG build/cpu/bin/train $ARGS --set train.epochs=2 --resume "$D/run.ckpt" > "$D/log" 2>&1 \
  || { cat "$D/log"; echo "test-valgrind: failed (resumed run)"; exit 1; }
grep -q "resumed from" "$D/log" || { cat "$D/log"; echo "test-valgrind: the second run did not resume"; exit 1; }
echo "test-valgrind: smoke run and resume clean (no memcheck errors, no definite leaks)"
