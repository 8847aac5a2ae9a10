#!/usr/bin/env bash
# gpu-check.sh — build nostall's CUDA backend and run its GPU checks on a machine
# that has a GPU and the CUDA toolkit but no package manager.
#
#   scripts/gpu-check.sh               find the libraries, build (when it can), run
#                                      test_cuda and ./bench ops --device cuda
#   scripts/gpu-check.sh --bundle DIR  on a machine that builds nostall: copy the
#                                      headers and shared libraries the build needs
#                                      (Criterion, OpenBLAS, stb, zlib) into DIR, to
#                                      carry to the GPU machine as NOSTALL_LIBS=DIR
# Environment:
#   NOSTALL_LIBS=DIR    copies placed beside the build: DIR/lib*.so* (what
#                       /work/shared/tools/bundle-libs.sh or --bundle makes) and,
#                       from --bundle, DIR/include
#   BUILD=DIR           build folder (default build/gpu-check); binaries already there are
#                       run as they are when this machine can't build
#   CUDNN=0             build without cuDNN (im2col + cuBLAS convolutions)
#   NVCC=PATH           the toolkit to build with (default: nvcc on PATH, /usr/local/cuda*)
#   NOSTALL_SANITIZE=1  also run test_cuda under compute-sanitizer (slow)
# Prints what it found, what is missing, each step's result; exit status 0 when
# every step that ran passed.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build/gpu-check}
LIBS=${NOSTALL_LIBS:-}
[ -n "$LIBS" ] && LIBS=$(cd "$LIBS" 2>/dev/null && pwd || echo "$LIBS")
say() { printf 'gpu-check: %s\n' "$*"; }
status=0

# ---- --bundle DIR: headers and libraries for a machine without them --------------
if [ "${1:-}" = "--bundle" ]; then
  dest=${2:?usage: $0 --bundle DIR}
  mkdir -p "$dest/include" || exit 1
  make --no-print-directory BUILD="$BUILD" "$BUILD/tests/test_cuda" || exit 1
  make --no-print-directory BUILD="$BUILD" "$BUILD/bin/bench" >/dev/null 2>&1 ||
    say "./bench does not build here; bundling for test_cuda alone"
  # the headers the compiler really uses for these includes, minus glibc's and gcc's
  printf '#include <criterion/criterion.h>\n#include <cblas.h>\n#include <zlib.h>\n#include <stb_image.h>\n' |
    cc -M -x c - $(pkg-config --cflags stb 2>/dev/null) 2>/dev/null | tr ' \\' '\n\n' |
    grep -E '/(criterion|stb|cblas|openblas|f77blas|zlib|zconf)[^/]*' | sort -u |
    while read -r h; do
      case $h in
        */criterion/*) mkdir -p "$dest/include/criterion"; cp -rL "${h%%/criterion/*}/criterion/." "$dest/include/criterion/" ;;
        */stb/*) mkdir -p "$dest/include/stb"; cp -L "$(dirname "$h")"/*.h "$dest/include/stb/" ;;
        *) cp -L "$h" "$dest/include/" ;;
      esac
    done
  skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libresolv|libstdc\+\+|libgcc_s|libgomp|libcuda|libcudart|libcublas|libcudnn|libnvrtc|libnvJitLink)'
  for bin in "$BUILD/tests/test_cuda" "$BUILD/bin/bench"; do
    [ -e "$bin" ] || continue
    ldd "$bin" | while read -r name _ path _; do
      [ -e "${path:-}" ] || continue
      [[ "$name" =~ $skip ]] || cp -L "$path" "$dest/"
    done
  done
  # the libraries the build links by name, which a binary may not load (--as-needed)
  for l in criterion openblas stb z; do
    so=$(readlink -f "$(cc -print-file-name="lib$l.so")")
    soname=$(objdump -p "$so" 2>/dev/null | awk '/SONAME/ {print $2}')
    [ -f "$so" ] && [ -n "$soname" ] && cp -L "$so" "$dest/$soname"
  done
  say "bundled into $dest: $(ls "$dest" | grep -c '\.so') libraries, headers: $(ls "$dest/include" | tr '\n' ' ')"
  say "on the GPU machine: NOSTALL_LIBS=$dest scripts/gpu-check.sh"
  exit 0
fi

# ---- what this machine has -------------------------------------------------------
NVCC=${NVCC:-$(command -v nvcc || ls /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc 2>/dev/null | head -1)}
CUDA_HOME=${NVCC%/bin/nvcc}
driver_cuda=""
if command -v nvidia-smi >/dev/null; then
  say "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
  driver_cuda=$(nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | grep -o '[0-9.]*$')
  [ -n "$driver_cuda" ] && say "the driver runs CUDA up to $driver_cuda"
else
  say "nvidia-smi not found: no NVIDIA driver here?"
fi
if [ -n "$NVCC" ]; then
  toolkit=$("$NVCC" --version | grep -o 'release [0-9.]*' | grep -o '[0-9.]*$')
  say "CUDA toolkit: $CUDA_HOME ($toolkit)"
  # A runtime newer than the driver fails with cudaErrorInsufficientDriver.
  if [ -n "$driver_cuda" ] && [ "$(printf '%s\n%s\n' "$toolkit" "$driver_cuda" | sort -V | tail -1)" != "$driver_cuda" ]; then
    say "WARNING: toolkit $toolkit is newer than the driver's CUDA $driver_cuda: the GPU will not be usable;"
    say "         point NVCC= at a toolkit no newer than $driver_cuda (ls -d /usr/local/cuda-*)"
  fi
else
  say "CUDA toolkit: not found (no nvcc on PATH or in /usr/local/cuda*; set NVCC=)"
fi

# Search paths: the bundle, then the system. Unversioned link names (libfoo.so) for
# libraries that come only as libfoo.so.N go into $BUILD/link.
mkdir -p "$BUILD/link"
INC="" LIBDIRS="" RUNDIRS=""
add_libdir() { LIBDIRS="$LIBDIRS -L$1"; RUNDIRS="$RUNDIRS:$1"; }
if [ -n "$LIBS" ]; then
  [ -d "$LIBS" ] || { say "NOSTALL_LIBS=$LIBS is not a folder"; exit 1; }
  [ -d "$LIBS/include" ] && INC="$INC -I$LIBS/include -I$LIBS/include/stb"
  add_libdir "$LIBS"
  for so in "$LIBS"/lib*.so.*; do
    [ -e "$so" ] || continue
    base=$(basename "$so"); ln -sf "$so" "$BUILD/link/${base%%.so.*}.so"
  done
fi
[ -d /usr/include/stb ] && INC="$INC -I/usr/include/stb"
[ -n "$NVCC" ] && add_libdir "$CUDA_HOME/lib64"
case $BUILD in /*) add_libdir "$BUILD/link" ;; *) add_libdir "$PWD/$BUILD/link" ;; esac

# cuDNN: the toolkit's, the system's, the bundle's, or the one inside PyTorch
CUDNN_INC="" CUDNN_LIB=""
for d in "$CUDA_HOME/include" /usr/include /usr/include/x86_64-linux-gnu ${LIBS:+"$LIBS/include"}; do
  [ -f "$d/cudnn.h" ] && { CUDNN_INC=$d; break; }
done
for d in "$CUDA_HOME/lib64" /usr/lib/x86_64-linux-gnu ${LIBS:+"$LIBS"}; do
  [ -e "$d/libcudnn.so.9" ] && { CUDNN_LIB=$d; break; }
done
if [ -z "$CUDNN_LIB" ] || [ -z "$CUDNN_INC" ]; then
  torch=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null)
  if [ -n "$torch" ]; then
    for d in "$torch/lib" "$torch/../nvidia/cudnn/lib"; do
      [ -z "$CUDNN_LIB" ] && [ -e "$d/libcudnn.so.9" ] && CUDNN_LIB=$(cd "$d" && pwd)
    done
    [ -z "$CUDNN_INC" ] && [ -f "$torch/../nvidia/cudnn/include/cudnn.h" ] &&
      CUDNN_INC=$(cd "$torch/../nvidia/cudnn/include" && pwd)
    [ -n "$CUDNN_LIB" ] && say "cuDNN from PyTorch: $CUDNN_LIB"
  fi
fi
if [ -n "$CUDNN_LIB" ]; then
  RUNDIRS="$RUNDIRS:$CUDNN_LIB"
  [ -e "$CUDNN_LIB/libcudnn.so" ] || ln -sf "$CUDNN_LIB/libcudnn.so.9" "$BUILD/link/libcudnn.so"
  LIBDIRS="$LIBDIRS -L$CUDNN_LIB"
fi
[ -n "$CUDNN_INC" ] && [ "$CUDNN_INC" != "$CUDA_HOME/include" ] && INC="$INC -I$CUDNN_INC"

# ---- which libraries the build can use ------------------------------------------
probe() {  # probe NAME HEADER LIB: compiles and links a program using both
  printf '#include <%s>\nint main(void) { return 0; }\n' "$2" |
    cc -x c - -o /dev/null $INC $LIBDIRS "-l$3" >/dev/null 2>&1
}
missing=""
for dep in "Criterion criterion/criterion.h criterion" "OpenBLAS cblas.h openblas" \
           "stb stb_image.h stb" "zlib zlib.h z"; do
  set -- $dep
  if probe "$1" "$2" "$3"; then say "found $1"; else say "MISSING $1 ($2, lib$3.so)"; missing="$missing $1"; fi
done
cudnn=${CUDNN:-1}
if [ -z "$CUDNN_INC" ] || [ -z "$CUDNN_LIB" ]; then
  [ "$cudnn" = 1 ] && say "MISSING cuDNN 9 (header: ${CUDNN_INC:-none}, libcudnn.so.9: ${CUDNN_LIB:-none}): building with CUDNN=0"
  cudnn=0
else
  say "found cuDNN ($CUDNN_INC, $CUDNN_LIB)"
fi

# ---- build ------------------------------------------------------------------------
# Only the programs under test get the bundle's libraries: the compiler must keep
# the system's own.
RUN_LD="${RUNDIRS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -n "$NVCC" ] && [ -z "$missing" ]; then
  say "building in $BUILD (CUDNN=$cudnn)"
  if CFLAGS="-O2 -g $INC" NVCCFLAGS="-O2 -g -lineinfo $INC" LDFLAGS="$LIBDIRS" \
     make --no-print-directory BUILD="$BUILD" CUDA=1 CUDNN="$cudnn" NVCC="$NVCC" \
       "$BUILD/tests/test_cuda" "$BUILD/bin/bench" >"$BUILD/build.log" 2>&1; then
    say "build: ok"
  else
    say "build FAILED; the end of $BUILD/build.log:"; tail -20 "$BUILD/build.log"; status=1
  fi
else
  say "not building (${NVCC:+missing:$missing}${NVCC:-no nvcc}); using the binaries already in $BUILD"
fi

# ---- run ----------------------------------------------------------------------------
run_step() {  # run_step NAME CMD...: runs it if its binary is there, says how it went
  local name=$1; shift
  if [ ! -x "$1" ]; then say "$name: $1 not there, skipped"; return; fi
  local unresolved
  unresolved=$(LD_LIBRARY_PATH=$RUN_LD ldd "$1" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')
  [ -n "$unresolved" ] && say "$name: libraries not found: $unresolved(give them in NOSTALL_LIBS)"
  say "$name: $*"
  LD_LIBRARY_PATH=$RUN_LD "$@"; local rc=$?
  if [ $rc -eq 0 ]; then say "$name: passed"; else say "$name: FAILED (exit $rc)"; status=1; fi
}
run_step test_cuda "$BUILD/tests/test_cuda" --verbose --jobs 1
if [ -n "$driver_cuda" ]; then run_step "bench ops" "$BUILD/bin/bench" ops --device cuda
else say "bench ops: skipped, no GPU driver"; fi
if [ "${NOSTALL_SANITIZE:-0}" = 1 ]; then
  san=$(command -v compute-sanitizer || ls "$CUDA_HOME"/bin/compute-sanitizer 2>/dev/null)
  if [ -n "$san" ]; then
    run_step "compute-sanitizer" "$san" --tool memcheck --target-processes all --error-exitcode 9 \
      "$BUILD/tests/test_cuda" --jobs 1
  else
    say "compute-sanitizer not found, skipped"
  fi
fi
say "done: $([ $status -eq 0 ] && echo 'every step passed' || echo 'something FAILED (see above)')"
exit $status
