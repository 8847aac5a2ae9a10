#!/usr/bin/env bash
# gpu-pack.sh — fill .gpu/ (ignored by git) with what one call on a lent GPU machine
# needs, for scripts/gpu-session.sh to run there:
#
#   scripts/gpu-pack.sh          then, through the device tool, one call:
#                                run(command="scripts/gpu-session.sh all", carry=[".gpu"], timeout_s=300)
#
# That machine reaches no package registry and receives at most 64 MiB, so this packs,
# into one xz'd tar:
#   bin/          train, bench, prepare, test_cuda: the CUDA build with cuDNN (sm_80, sm_90)
#   bin-nocudnn/  the same built with CUDNN=0 (im2col + cuBLAS convolutions), which the
#                 session falls back to when the cuDNN build fails to load or initialise
#                 there: cuDNN comes from PyTorch's wheels, whose minor version may be
#                 older than the headers built against here
#   libs/         the shared libraries they load apart from CUDA's and glibc's
#                 (Criterion, OpenBLAS, stb, zlib...)
#   libs-extra/   libgomp, libstdc++, libgcc_s: used there only if that machine lacks them
#   PACKED.txt    what was packed: the commit, nvcc's and cuDNN's header versions
# and, beside it, Fashion-MNIST's IDX files (30 MB), from which `prepare` makes the PNG
# folder there in seconds. xz -9's 64 MiB window sees both builds at once, so the
# second costs little. Environment: BUNDLE_LIBS (bundle-libs.sh), IDX_DIR, MAKEFLAGS.
set -eu
cd "$(dirname "$0")/.."
dest=.gpu
bundle=${BUNDLE_LIBS:-../shared/tools/bundle-libs.sh}
idx=${IDX_DIR:-/usr/share/datasets/fashion-mnist}
say() { printf 'gpu-pack: %s\n' "$*"; }

nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || { say "no nvcc here: the CUDA build can't be made (install the CUDA toolkit)"; exit 1; }
[ -f "$bundle" ] || { say "$bundle not found (set BUNDLE_LIBS= to bundle-libs.sh)"; exit 1; }
[ -f "$idx/train-images-idx3-ubyte.gz" ] ||
  { say "no Fashion-MNIST IDX files in $idx: run make setup (dataset-fashion-mnist)"; exit 1; }

make --no-print-directory all build/tests/test_cuda
make --no-print-directory CUDNN=0 BUILD=build-nocudnn all build-nocudnn/tests/test_cuda
nm -D build/bin/train | grep -q ' U cudaMalloc' ||
  { say "build/bin/train doesn't use CUDA: make it with the toolkit (make CUDA=1)"; exit 1; }
nm -D build-nocudnn/bin/train | grep -q ' U cudnn' &&
  { say "build-nocudnn/bin/train still loads cuDNN: remove build-nocudnn and run again"; exit 1; }

stage=$dest/stage
rm -rf "$dest" && mkdir -p "$stage/bin" "$stage/bin-nocudnn" "$stage/libs" "$stage/libs-extra"
names=(bin/train bin/bench bin/prepare tests/test_cuda)
cp "${names[@]/#/build/}" "$stage/bin/"
cp "${names[@]/#/build-nocudnn/}" "$stage/bin-nocudnn/"
bash "$bundle" "$stage/libs" "$stage"/bin/* "$stage"/bin-nocudnn/* >/dev/null
# bundle-libs.sh leaves out the compiler's runtimes, which every machine with gcc has;
# these copies are there in case that one has no gcc.
for l in libgomp.so.1 libstdc++.so.6 libgcc_s.so.1; do
  cp -L "$(gcc -print-file-name=$l)" "$stage/libs-extra/"
done
{
  echo "packed $(date -u '+%Y-%m-%d %H:%M UTC') from $(git describe --always --dirty) on $(hostname)"
  echo "nvcc: $("$nvcc" --version | grep -o 'release [0-9.]*, V[0-9.]*')"
  cudnn_h=$(dirname "$nvcc")/../include/cudnn_version.h
  [ -f "$cudnn_h" ] || cudnn_h=/usr/include/cudnn_version.h
  echo "cuDNN headers: $(awk '/define CUDNN_(MAJOR|MINOR|PATCHLEVEL) / {printf "%s%s", s, $3; s="."}' "$cudnn_h" 2>/dev/null)"
  echo "glibc: $(ldd --version | head -1)"
} >"$stage/PACKED.txt"
tar -cf - -C "$stage" PACKED.txt bin bin-nocudnn libs libs-extra | xz -9 -T2 >"$dest/nostall.tar.xz"
rm -rf "$stage"
cp "$idx"/*-ubyte.gz "$dest/"
[ -d ../shared ] && cp -r ../shared "$dest/shared" && chmod -R u+w "$dest/shared" # the team's shared notes, for reading there
say "packed $(du -sh "$dest" | cut -f1) into $dest (the limit is 64 MiB with the repository):"
du -ah "$dest" --max-depth 1 | sed 's/^/  /'
