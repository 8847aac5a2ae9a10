#!/usr/bin/env bash
# gpu-session.sh — the GPU checks of issues 5 and 6, run on a lent GPU machine from
# what scripts/gpu-pack.sh put in .gpu/ (the machine builds nothing and fetches
# nothing). One phase per call, each well inside the device tool's 10 minutes:
#
#   scripts/gpu-session.sh check   nvidia-smi, test_cuda, ./bench ops and kernels --device cuda
#   scripts/gpu-session.sh train   resnet_small: pinned x overlap, 300 steps each, timelines;
#                                  the whole default run; PyTorch on the same model, side by side
#   scripts/gpu-session.sh lab     ./bench pipeline --device cuda (the lab's GPU rows)
#
# Through the device tool: run(command="scripts/gpu-session.sh check", carry=[".gpu"]).
# Logs go to $OUT (the tool's folder that comes back; .gpu/out without it): one
# PHASE.txt per phase with every command, its time and its output, plus the files
# named there. cuDNN 9 and the CUDA runtime come from the toolkit or PyTorch's wheels.
set -u
cd "$(dirname "$0")/.." || exit 1
phase=${1:-check}
out=${OUT:-.gpu/out}
mkdir -p "$out"
log="$out/$phase.txt"
: >"$log"
say() { printf 'gpu-session: %s\n' "$*" | tee -a "$log"; }
[ -f .gpu/nostall.tar.xz ] || { say "no .gpu/nostall.tar.xz: run scripts/gpu-pack.sh first and carry .gpu"; exit 1; }

# ---- unpack, and find the libraries the binaries load -----------------------------
work=/tmp/nostall-gpu
if [ ! -x "$work/bin/train" ]; then
  rm -rf "$work"
  mkdir -p "$work"
  tar -xJf .gpu/nostall.tar.xz -C "$work" || { say "unpacking .gpu/nostall.tar.xz failed"; exit 1; }
fi
dirs=$(python3 - <<'EOF' 2>>"$log"
import glob, os, site, sys
want = ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcudnn.so.9"]
roots = ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"]
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    roots += glob.glob(os.path.join(sp, "nvidia", "*", "lib")) + [os.path.join(sp, "torch", "lib")]
found = []
for w in want:
    for r in roots:
        if os.path.exists(os.path.join(r, w)):
            if r not in found:
                found.append(r)
            break
    else:
        print("gpu-session: " + w + " not found in " + " ".join(roots), file=sys.stderr)
print(":".join(found))
EOF
)
export LD_LIBRARY_PATH="$work/libs${dirs:+:$dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
unresolved=$(ldd "$work/bin/train" "$work/bin/test_cuda" | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
[ -n "$unresolved" ] && say "libraries not found: $unresolved"

status=0
step() {  # step NAME CMD...: runs it, logs its output and time, goes on when it fails
  local name=$1; shift
  say "---- $name: $*"
  local t0=$SECONDS
  "$@" >>"$log" 2>&1
  local rc=$?
  say "---- $name: exit $rc after $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || status=1
}
data() {  # the PNG folder and packed files, from the carried IDX files
  [ -f data/fashion-mnist/train.packed ] ||
    step "prepare" "$work/bin/prepare" fashion-mnist --src .gpu --out data/fashion-mnist
}

case $phase in
check)
  step "nvidia-smi" nvidia-smi
  step "test_cuda" "$work/bin/test_cuda" --verbose --jobs 1
  step "bench ops" "$work/bin/bench" ops --device cuda
  step "bench kernels" "$work/bin/bench" kernels --device cuda
  ;;
train)
  data
  for pinned in yes no; do
    for overlap in yes no; do
      step "train pinned=$pinned overlap=$overlap" "$work/bin/train" configs/resnet_small.cfg --device cuda \
        --set loader.pinned=$pinned --set loader.overlap=$overlap --set train.max_steps=300 \
        --set train.eval_every=0 --set 'train.checkpoint=""' \
        --trace "/tmp/trace-$pinned-$overlap.json" --timeline "$out/timeline-pinned-$pinned-overlap-$overlap.svg"
    done
  done
  rm -f "$out"/timeline-pinned-no-*.svg # eight files at most come back
  step "the default run" timeout 420 "$work/bin/train" configs/resnet_small.cfg --device cuda \
    --set 'train.checkpoint=""'
  step "PyTorch NCHW" python3 scripts/torch_resnet_small.py --device cuda
  step "PyTorch channels-last" python3 scripts/torch_resnet_small.py --device cuda --channels-last
  ;;
lab)
  data
  step "bench pipeline" "$work/bin/bench" pipeline --device cuda --out "$out" --name stall-lab-gpu
  ;;
*)
  say "unknown phase '$phase': check, train or lab"; exit 2 ;;
esac
say "done: $([ $status -eq 0 ] && echo 'every step passed' || echo 'a step FAILED (see above)')"
exit $status
