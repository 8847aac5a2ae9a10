#!/bin/sh
# interop.sh — make interop: train resnet_small briefly, export it as ONNX and as
# safetensors, and check both against nostall's own logits in onnxruntime and PyTorch
# (scripts/interop.py says what each check measures; docs/export.md). Writes its
# report to build/interop/interop.txt; with INTEROP_DOC=1 (make interop-doc) to
# docs/runs/interop.txt, copied into docs/export.md, so that CI leaves the tree as it
# was. The tools come from $BUILD/bin (make passes BUILD).
#
# Python: Debian's /usr/bin/python3 (the first python3 on PATH may be another one that
# cannot see Debian's python3-* modules) in a venv with --system-site-packages, so
# python3-torch, python3-onnx and python3-numpy come from Debian. PyPI is used only for
# what Debian lacks: onnxruntime and safetensors, pinned below. The venv is kept in
# build/interop-venv and rebuilt only when the pins change.
set -e
cd "$(dirname "$0")/.."
B=${BUILD:-build}
PINS="onnxruntime==1.16.3 safetensors==0.4.5"
STEPS=100           # a few seconds on 2 cores: BN statistics and weights away from their init
N=256               # test images compared
W=build/interop
V=build/interop-venv
REPORT=$W/interop.txt DOC=
[ "${INTEROP_DOC:-0}" = 1 ] && REPORT=docs/runs/interop.txt DOC="--doc docs/export.md"

# onnxruntime's own dependencies come from Debian too (packaging, coloredlogs,
# flatbuffers; sympy and protobuf arrive with python3-torch and python3-onnx).
sh scripts/setup.sh python3-venv python3-torch python3-onnx python3-numpy \
  python3-packaging python3-coloredlogs python3-flatbuffers
if [ ! -x $V/bin/python ] || [ "$(cat $V/nostall-pins 2>/dev/null)" != "$PINS" ]; then
  echo "interop: creating $V (Debian's python3 + $PINS from PyPI)"
  rm -rf $V
  /usr/bin/python3 -m venv --system-site-packages $V
  # --no-deps: every dependency is a Debian package above; nothing else from PyPI
  $V/bin/pip install --quiet --disable-pip-version-check --no-deps $PINS \
    || { echo "interop: pip could not install $PINS (is PyPI reachable?)" >&2; rm -rf $V; exit 1; }
  echo "$PINS" >$V/nostall-pins
fi

rm -rf $W && mkdir -p $W
# on the CPU (the numbers compared are float32 on the vectorized CPU kernels),
# from the pre-decoded packed file, no per-epoch test pass: a checkpoint in seconds
$B/bin/train configs/resnet_small.cfg --set train.device=cpu --set train.epochs=1 \
  --set train.max_steps=$STEPS --set train.eval_every=0 --set loader.cache=packed \
  --set train.checkpoint=$W/resnet_small.ckpt >$W/train.log 2>&1 \
  || { tail -n 20 $W/train.log >&2; echo "interop: training failed; the log is $W/train.log" >&2; exit 1; }
echo "interop: trained $STEPS steps of resnet_small -> $W/resnet_small.ckpt"
$B/bin/export $W/resnet_small.ckpt --format onnx $W/resnet_small.onnx
$B/bin/export $W/resnet_small.ckpt --format safetensors $W/resnet_small.safetensors
$B/bin/eval $W/resnet_small.ckpt --logits $W/logits.bin --limit $N >$W/eval.log 2>&1 \
  || { tail -n 20 $W/eval.log >&2; echo "interop: ./eval failed; the log is $W/eval.log" >&2; exit 1; }
echo "interop: nostall's logits on the first $N test images -> $W/logits.bin (./eval --logits)"
$B/tests/interop_adamw $W/adamw.bin
echo "interop: nostall's AdamW, 20 steps -> $W/adamw.bin (tests/interop_adamw.c)"

mkdir -p "$(dirname $REPORT)"
$V/bin/python scripts/interop.py --onnx $W/resnet_small.onnx --safetensors $W/resnet_small.safetensors \
  --logits $W/logits.bin --adamw $W/adamw.bin --report $REPORT $DOC \
  --note "resnet_small after $STEPS training steps on the CPU; nostall's logits by ./eval --logits on the first $N test images" \
  --note "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- . ":!$REPORT" ':!docs/export.md' 2>/dev/null || echo ' (with local changes)')"
