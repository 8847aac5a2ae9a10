#!/usr/bin/env bash
# gpu-session.sh — the whole GPU check of a lent GPU machine in ONE device-tool call,
# from what scripts/gpu-pack.sh put in .gpu/ (that machine builds and fetches nothing):
#
#   scripts/gpu-pack.sh                                                        # here
#   run(command="scripts/gpu-session.sh all", carry=[".gpu"], timeout_s=300)   # there
#
# Starting a machine takes minutes of a 15-minute lease, so the check is one call of
# under 5 minutes, which leaves time for a second try if the first breaks. The steps
# run in priority order, each under its own `timeout`, all within a total budget
# (GPU_SESSION_BUDGET, default 280 s); each appends its output to its own file in $OUT
# while it runs, so a step that hangs costs its own slot and keeps what came before.
# At most 8 files come back from $OUT, so these are all there are:
#
#   summary.txt      a line per step: build, exit status, seconds, command (after each)
#   1-versions.txt   unpacking; GPU, driver, CUDA runtime, cuBLAS, cuDNN and PyTorch
#                    versions; the libraries nostall's binaries load; preparing the data
#   2-test_cuda.txt  test_cuda on the GPU (--jobs 1, Criterion's --timeout per test)
#   3-train.txt      resnet_small, 300 steps, loader.pinned+overlap on, then both off
#   3-timeline.svg   the two runs' timelines on one time scale
#   4-torch.txt      PyTorch's same model and step on the same GPU, for the ratio
#   5-bench.txt      if time is left: ./bench ops and the stall lab's GPU rows
#   6-sanitizer.txt  if compute-sanitizer is there: memcheck on test_cuda, 60 s at most
#
# Everything runs in a fresh folder in /tmp (binaries, configs, data), so nothing of an
# earlier call on a warm machine is reused, and the checkout is left as it was.
# LD_LIBRARY_PATH (the bundled libraries, CUDA's from the toolkit or PyTorch's wheels)
# goes to nostall's binaries alone, never to python3: PyTorch loads its own. When the
# cuDNN build fails to load or initialise (PyTorch's cuDNN may be older than the
# headers built against), the step runs again with the CUDNN=0 build, and so do the
# steps after it.
#
# Environment:
#   OUT=DIR                where the files go (the device tool sets it; default .gpu/out)
#   GPU_SESSION_BUDGET=S   seconds for all the steps together (default 280)
#   GPU_SESSION_BIN=DIR    run DIR's train, bench, prepare and test_cuda (DIR/nocudnn/ as
#                          the fallback and DIR/libs/ when there) instead of unpacking
#                          .gpu: for rehearsals on a machine without a GPU
#   GPU_SESSION_IDX=DIR    Fashion-MNIST's IDX files (default .gpu)
#   GPU_SESSION_HANG=N     step N runs `sleep 1000` instead: rehearses a hang
#   GPU_SESSION_STEPS=N    training steps in step 3 (default 300; fewer for a rehearsal on
#                          the emulated device, whose kernels run on the CPU)
set -u
cd "$(dirname "$0")/.." || exit 1
self=$PWD/scripts/gpu-session.sh

# ---- step bodies: `all` runs them under timeout, with GS_* in the environment ----------

unpack() {  # .gpu/nostall.tar.xz into the work folder; python3's tarfile where there is no xz
  if command -v xz >/dev/null; then
    tar -xJf .gpu/nostall.tar.xz -C "$GS_WORK"
  else
    python3 -c 'import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    t.extractall(sys.argv[2], **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))' \
      .gpu/nostall.tar.xz "$GS_WORK"
  fi && ls "$GS_WORK"
}

run_bin() {  # NAME ARGS...: one of nostall's binaries, with its libraries; stdout is
             # line-buffered, so a run killed at its timeout keeps the lines it printed
  local bin=$GS_BIN/$1; shift
  [ -x "$bin" ] || { echo "gpu-session: $bin is not there"; return 127; }
  local buf=(); command -v stdbuf >/dev/null && buf=(stdbuf -oL)
  env LD_LIBRARY_PATH="$GS_LD" "${buf[@]}" "$bin" "$@"
}

find_cuda_libs() {  # the folders holding the CUDA libraries the binaries load, one a line
  python3 - <<'EOF'
import glob, os, site, sys
want = ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcudnn.so.9"]
roots = ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"]
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    # PyTorch's wheels: nvidia/cu13/lib (CUDA 13), nvidia/cudnn/lib, torch/lib
    roots += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "lib"))) + [os.path.join(sp, "torch", "lib")]
found = []
for w in want:
    where = next((r for r in roots if os.path.exists(os.path.join(r, w))), None)
    if where is None:
        print(f"gpu-session: {w} not found in {' '.join(roots)}", file=sys.stderr)
    elif where not in found:
        found.append(where)
print("\n".join(found))
EOF
}

versions() {
  local rc=0
  # the library path first, and into a file: `all` gives it to every later step
  local dirs ld
  dirs=$(find_cuda_libs | paste -sd:)
  ld=$GS_LIBS; [ -d "$ld" ] || ld=""
  ld="$ld${dirs:+:$dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  ld=${ld#:}
  # the compiler's runtimes come with gcc; the pack has copies in case this machine has none
  if env LD_LIBRARY_PATH="$ld" ldd "$GS_BIN"/* 2>/dev/null | grep -qE '^\s*lib(gomp|stdc\+\+|gcc_s)\.so.* not found' &&
     [ -d "$GS_WORK/libs-extra" ]; then
    ld="$ld:$GS_WORK/libs-extra"
  fi
  echo "$ld" >"$GS_WORK/ld_path"
  export GS_LD=$ld

  echo "== the pack"
  cat "$GS_WORK/PACKED.txt" 2>/dev/null || echo "binaries from $GS_BIN (no PACKED.txt)"
  echo "== GPU and driver"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv &&
    nvidia-smi | grep -m1 'CUDA Version' || rc=1
  echo "== PyTorch, as python3 loads it (without nostall's LD_LIBRARY_PATH)"
  python3 - <<'EOF' || rc=1
import os, re, sys
try:
    import torch
except Exception as e:
    sys.exit(f"can't import torch: {e}")
print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}; "
      f"torch.backends.cudnn.version() = {torch.backends.cudnn.version()}; at {os.path.dirname(torch.__file__)}")
gpu = torch.cuda.is_available()
print(f"GPU as PyTorch sees it: {torch.cuda.get_device_name(0) if gpu else 'none'}")
if gpu:  # a convolution, so that cuBLAS and cuDNN are loaded too
    x = torch.ones(1, 1, 8, 8, device="cuda")
    torch.nn.functional.conv2d(x, torch.ones(1, 1, 3, 3, device="cuda")).sum().item()
    (x[0, 0] @ x[0, 0]).sum().item()
with open("/proc/self/maps") as f:
    loaded = sorted({l.split()[-1] for l in f if re.search(r"/lib(cudart|cublas|cublasLt|cudnn[a-z_]*)\.so", l)})
print("PyTorch loaded:" + "".join("\n  " + p for p in loaded) if loaded else "PyTorch loaded no CUDA library")
sys.exit(0 if gpu else 1)
EOF
  echo "== the libraries nostall's binaries load ($GS_BIN/*, LD_LIBRARY_PATH=$GS_LD)"
  local libs
  libs=$(for b in train bench prepare test_cuda; do env LD_LIBRARY_PATH="$GS_LD" ldd "$GS_BIN/$b"; done |
         awk '$2 == "=>" { print $1, ($3 == "not" ? "NOT FOUND" : $3) }' | sort -u)
  echo "$libs"
  echo "== their versions (each file loaded by python3's ctypes, by its path)"
  # shellcheck disable=SC2046 # one argument per path
  python3 - $(echo "$libs" | awk '$1 ~ /^lib(cudart|cublas|cudnn)/ && $2 ~ /^\// {print $2}') <<'EOF' || rc=1
import ctypes, sys
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1]
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        print(f"{name}: can't load it here: {e}")
        continue
    v = ctypes.c_int(0)
    if name.startswith("libcudart"):
        lib.cudaRuntimeGetVersion(ctypes.byref(v))
        what = f"CUDA runtime {v.value // 1000}.{v.value % 1000 // 10}"
    elif name.startswith("libcublasLt"):
        lib.cublasLtGetVersion.restype = ctypes.c_size_t
        what = f"cuBLASLt {lib.cublasLtGetVersion()}"
    elif name.startswith("libcublas"):
        parts = []
        for prop in range(3):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
            lib.cublasGetProperty(prop, ctypes.byref(v))
            parts.append(str(v.value))
        what = "cuBLAS " + ".".join(parts)
    else:
        lib.cudnnGetVersion.restype = ctypes.c_size_t
        n = lib.cudnnGetVersion()
        what = f"cuDNN {n // 10000}.{n % 10000 // 100}.{n % 100}"
    print(f"{name}: {what}  ({path})")
EOF
  # LD_BIND_NOW binds every function at start: a cuDNN older than the headers that
  # lacks a function fails here, in a second, and not in the middle of a test
  echo "== load check (LD_BIND_NOW=1 BINARY --help)"
  for b in train bench prepare test_cuda; do
    local err
    err=$(env LD_BIND_NOW=1 LD_LIBRARY_PATH="$GS_LD" "$GS_BIN/$b" --help 2>&1 >/dev/null |
          grep -E 'error while loading|symbol lookup error|undefined symbol|No such file')
    if [ -n "$err" ]; then echo "$b: $err"; rc=1; else echo "$b: loads"; fi
  done
  return $rc
}

train_run() {  # yes|no: 300 steps (GPU_SESSION_STEPS) of resnet_small with loader.pinned and loader.overlap both so
  local p=$1 rc
  local picture=(); [ "$p" = yes ] && picture=(--timeline "$GS_OUT/3-timeline.svg")
  run_bin train configs/resnet_small.cfg --device cuda --set loader.pinned="$p" --set loader.overlap="$p" \
    --set train.max_steps="${GPU_SESSION_STEPS:-300}" --set train.eval_every=0 --set 'train.checkpoint=""' \
    --trace "$GS_WORK/trace-$p.json" "${picture[@]}"
  rc=$?
  # one SVG comes back: after the second run, both runs on one time scale replace the first's
  if [ "$p" = no ] && [ -f "$GS_WORK/trace-yes.json" ] && [ -f "$GS_WORK/trace-no.json" ]; then
    run_bin bench timeline "$GS_WORK/trace-yes.json" "$GS_WORK/trace-no.json" -o "$GS_OUT/3-timeline.svg" \
      --title "resnet_small on the GPU: loader.pinned+overlap on (top), off (bottom)" || rc=1
  fi
  return $rc
}

gpu_tests() {  # test_cuda; its GPU tests skipped (no usable GPU) fail the step, as they test nothing
  run_bin test_cuda --verbose --jobs 1 --timeout=30 2>&1 | tee "$GS_WORK/test_cuda.log"
  local rc=${PIPESTATUS[0]}
  if grep -q 'tests skipped: no usable GPU' "$GS_WORK/test_cuda.log"; then
    echo "gpu-session: test_cuda's GPU tests were skipped: counted as a failure"
    rc=1
  fi
  return "$rc"
}

sanitizer() {  # memcheck on test_cuda; a compute-sanitizer that can't start here is no failure
  local rc
  env LD_LIBRARY_PATH="$GS_LD" "$GS_SAN" --tool memcheck --target-processes all --error-exitcode 9 \
    "$GS_BIN/test_cuda" --verbose --jobs 1 --timeout=30 2>&1 | tee "$GS_WORK/sanitizer.log"
  rc=${PIPESTATUS[0]}
  # 9: memcheck found errors; another failure before any test ran: it didn't start
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 9 ] && ! grep -qE '\[RUN|Synthesis' "$GS_WORK/sanitizer.log"; then
    echo "gpu-session: compute-sanitizer did not start test_cuda here (exit $rc): not counted as a failure"
    return 0
  fi
  return "$rc"
}

case ${1:-all} in
  _unpack) unpack; exit ;;
  _versions) versions; exit ;;
  _bin) shift; cd "$GS_WORK" && run_bin "$@"; exit ;;
  _test_cuda) cd "$GS_WORK" && gpu_tests; exit ;;
  _train) cd "$GS_WORK" && train_run "$2"; exit ;;
  _sanitizer) cd "$GS_WORK" && sanitizer; exit ;;
  all) ;;
  *) echo "usage: scripts/gpu-session.sh all   (see the comment at its top)" >&2; exit 2 ;;
esac

# ---- all: the steps ---------------------------------------------------------------------

budget=${GPU_SESSION_BUDGET:-280}
deadline=$((SECONDS + budget))
out=${OUT:-.gpu/out}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 1
rm -f "$out"/summary.txt "$out"/[1-6]-*.txt "$out"/3-timeline.svg  # a rehearsal's earlier files
work=$(mktemp -d /tmp/nostall-gpu.XXXXXX) || exit 1
# Removed in the background: once the disk has the 70000 PNGs, removing them can take
# a minute of the call (on a device machine the rm is stopped when the call returns).
trap 'rm -rf "$work" >/dev/null 2>&1 &' EXIT
cp -r configs "$work/"
idx=${GPU_SESSION_IDX:-.gpu}
case $idx in /*) ;; *) idx=$PWD/$idx ;; esac
if [ -n "${GPU_SESSION_BIN:-}" ]; then
  bin=$(cd "$GPU_SESSION_BIN" && pwd) || exit 1
  nocudnn=$bin/nocudnn libs=$bin/libs source="GPU_SESSION_BIN=$bin"
else
  bin=$work/bin nocudnn=$work/bin-nocudnn libs=$work/libs source="unpacked from .gpu/nostall.tar.xz"
fi
using=cudnn  # which build $bin is: cudnn, or nocudnn after a fallback
export GS_WORK=$work GS_OUT=$out GS_LIBS=$libs GS_LD=$libs

started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
rows=() failed=0
summary() {  # rewrites summary.txt: a header, a line per step so far, and what runs now
  {
    echo "gpu-session all: started $started; budget $budget s; binaries $source"
    printf '%-15s %-8s %-11s %7s  %s\n' step build exit seconds command
    [ ${#rows[@]} -gt 0 ] && printf '%s\n' "${rows[@]}"
    [ $# -gt 0 ] && printf '%s\n' "$@"
  } >"$out/summary.txt"
}
row() {  # NAME BUILD EXIT SECONDS COMMAND...: one line of the summary, printed as well
  local name=$1 build=$2 status=$3 took=$4 line; shift 4
  local what="$*"; what=${what//$self/gpu-session.sh}; what=${what//$work/\$work}
  line=$(printf '%-15s %-8s %-11s %7s  %.100s' "$name" "$build" "$status" "$took" "$what")
  rows+=("$line")
  echo "gpu-session: $line"
  summary
}
cudnn_broke() {  # reads a step's output: did the cuDNN build fail to load or initialise?
  grep -i cudnn | grep -qiE 'error while loading|symbol lookup|undefined symbol|not found|cudnnCreate|cudnnSetStream|SUBLIBRARY|VERSION_MISMATCH'
}

step() {  # step NAME SECONDS CMD...: CMD under `timeout`, at most SECONDS and never past the
          # budget, its output appended to $out/NAME.txt; a line in summary.txt
  local name=$1 secs=$2; shift 2
  local left=$((deadline - SECONDS - 6))  # 6: timeout's -k 5 grace, and the bookkeeping
  [ "$secs" -gt "$left" ] && secs=$left
  if [ "${GPU_SESSION_HANG:-}" = "${name%%-*}" ]; then set -- sleep 1000; fi  # the rehearsal of a hang
  local build=-; [ "$1" = "$self" ] && [ "$2" != _unpack ] && build=$using  # nostall's binaries run
  if [ "$secs" -lt 5 ]; then row "$name" "$build" skipped 0 "(no time left) $*"; return 1; fi
  local log=$out/$name.txt t0=$SECONDS from rc status
  printf '\n==== %s, at most %d s: %s\n' "$(date +%T)" "$secs" "$*" >>"$log"
  from=$(stat -c %s "$log")
  summary "$(printf '%-15s %-8s %-11s %7s  %.100s' "$name" "$build" running "" "$*")"
  GS_BIN=$bin timeout -k 5 "$secs" "$@" </dev/null >>"$log" 2>&1
  rc=$?
  local took=$((SECONDS - t0))
  status=$rc
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    status="$rc/timeout"; echo "==== timed out after $secs s" >>"$log"
  fi
  [ $rc -eq 0 ] || failed=$((failed + 1))
  row "$name" "$build" "$status" "$took" "$@"
  # A cuDNN that doesn't load or start: this step again, and every later one, with CUDNN=0
  if [ "$build" = cudnn ] && [ -d "$nocudnn" ] && tail -c +$((from + 1)) "$log" | cudnn_broke; then
    echo "==== the cuDNN build failed to load or initialise: again with the CUDNN=0 build, here and after" >>"$log"
    bin=$nocudnn using=nocudnn
    step "$name" $((secs - took)) "$@"
    return
  fi
  return $rc
}

# 1: versions and libraries, and the data every later step reads (70000 PNGs: seconds on
# a fast disk, a minute here when the machine is busy)
if [ -z "${GPU_SESSION_BIN:-}" ]; then
  step 1-versions 60 "$self" _unpack
fi
step 1-versions 60 "$self" _versions
[ -s "$work/ld_path" ] && GS_LD=$(cat "$work/ld_path")
step 1-versions 90 "$self" _bin prepare fashion-mnist --src "$idx" --out "$work/data/fashion-mnist"

# 2: the CUDA suite on the real GPU (--jobs 1; Criterion's --timeout=30 stops a test stuck
# in a kernel, and the step's timeout the whole suite)
step 2-test_cuda 100 "$self" _test_cuda

# 3: the copy stage on a real GPU: pinned + overlapped copies, then neither
step 3-train 60 "$self" _train yes
step 3-train 60 "$self" _train no

# 4: PyTorch, the same model and step, on the same GPU, right after: the ratio
step 4-torch 60 env PYTHONUNBUFFERED=1 python3 scripts/torch_resnet_small.py --device cuda \
  --data "$work/data/fashion-mnist"
step 4-torch 30 env PYTHONUNBUFFERED=1 python3 scripts/torch_resnet_small.py --device cuda \
  --data "$work/data/fashion-mnist" --channels-last --e2e-steps 0

# 5 and 6, with what is left: the lab leaves the sanitizer its minute (and 12 s for the
# two steps' kill grace and bookkeeping)
san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
export GS_SAN=$san  # for the sanitizer step
step 5-bench 45 "$self" _bin bench ops --device cuda
reserve=0; [ -n "$san" ] && reserve=72
step 5-bench $((deadline - SECONDS - reserve)) "$self" _bin bench pipeline --device cuda --quick --no-docs
if [ -n "$san" ]; then
  step 6-sanitizer 60 "$self" _sanitizer
else
  row 6-sanitizer - skipped 0 "no compute-sanitizer on this machine"
fi

summary "total: $SECONDS s of a $budget s budget; $failed step(s) failed or timed out"
echo "gpu-session: total $SECONDS s of $budget s; $failed step(s) failed or timed out; files in $out:"
ls "$out"
[ "$failed" -eq 0 ]
