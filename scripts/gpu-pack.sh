#!/usr/bin/env bash
# gpu-pack.sh — fill .gpu/ (ignored by git) with what one call on a lent GPU machine
# needs, for scripts/gpu-session.sh to run there:
#
#   scripts/gpu-pack.sh          then, through the device tool:
#                                run(command="scripts/gpu-session.sh", carry=[".gpu"])
#
# That machine reaches no package registry and receives at most 64 MiB, so this
# packs, compressed: the CUDA build of train, bench, prepare and test_cuda (made here
# for sm_80 and sm_90), the shared libraries they load apart from CUDA's and glibc's
# (Criterion, OpenBLAS, stb, zlib...: about 48 MB, 9 MB as xz), and Fashion-MNIST's
# IDX files from dataset-fashion-mnist (30 MB), from which `prepare` makes the PNG
# folder there in seconds. cuDNN comes from the machine's PyTorch.
set -eu
cd "$(dirname "$0")/.."
dest=.gpu
bundle=${BUNDLE_LIBS:-../shared/tools/bundle-libs.sh}
idx=${IDX_DIR:-/usr/share/datasets/fashion-mnist}
say() { printf 'gpu-pack: %s\n' "$*"; }

[ -x "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" ] ||
  { say "no nvcc here: the CUDA build can't be made (install the CUDA toolkit)"; exit 1; }
[ -f "$bundle" ] || { say "$bundle not found (set BUNDLE_LIBS= to bundle-libs.sh)"; exit 1; }
[ -f "$idx/train-images-idx3-ubyte.gz" ] ||
  { say "no Fashion-MNIST IDX files in $idx: run make setup (dataset-fashion-mnist)"; exit 1; }

make --no-print-directory all build/tests/test_cuda
nm -D build/bin/train | grep -q ' U cudaMalloc' ||
  { say "build/bin/train doesn't use CUDA: make it with the toolkit (make CUDA=1)"; exit 1; }

rm -rf "$dest" && mkdir -p "$dest/stage/libs"
bins=(build/bin/train build/bin/bench build/bin/prepare build/tests/test_cuda)
bash "$bundle" "$dest/stage/libs" "${bins[@]}" >/dev/null
mkdir -p "$dest/stage/bin" && cp "${bins[@]}" "$dest/stage/bin/"
tar -cJf "$dest/nostall.tar.xz" -C "$dest/stage" bin libs
rm -rf "$dest/stage"
cp "$idx"/*-ubyte.gz "$dest/"
[ -d ../shared ] && cp -r ../shared "$dest/shared" && chmod -R u+w "$dest/shared" # the team's shared notes, for reading there
say "packed $(du -sh "$dest" | cut -f1) into $dest (the limit is 64 MiB with the repository):"
du -ah "$dest" --max-depth 1 | sed 's/^/  /'
