#!/bin/sh
# check-layers.sh [ROOT] — fails when a file includes a header of a layer above its own
# (docs/design.md, "Layers"). Layers, lowest first; a file may include headers of its
# own module and of modules on lower layers, never of another module on its layer or
# above:
#   0 base      error.h os.h rng.h         (leaf helpers every layer may use)
#   1 kernels   backend.h, kernels/**      (the backend tables and their math)
#   2 core      tensor.h                   (tensors and the step arena)
#   3 autograd  autograd.h
#   4 ops data config trace
#   5 nn loader viz
#   6 optim models
#   7 train     train.h report.h checkpoint.h evaluate.h
#   7 export    export.h, src/export/**   (a trained model written for other frameworks)
#   8 tools     tools/**
# A file's module is its folder (src/<module>/, kernels/, models/, tools/); a header's
# is the table below. tests/ may include anything. A header missing from the table is
# an error, so a new header has to be given its layer.
# export sits on train's layer: it reads a finalized model (nn) and its config, may use
# anything below it (models, optim), and only tools use it. It needs no checkpoint (the
# tool opens one and hands the model over) and the trainer needs no export, so neither
# includes the other. onnx.pb-c.h, generated from Debian's onnx.proto into
# $(BUILD)/gen, is export's.
ROOT=${1:-.}
cd "$ROOT"

rank() {
  case $1 in
    base) echo 0 ;; kernels) echo 1 ;; core) echo 2 ;; autograd) echo 3 ;;
    ops|data|config|trace) echo 4 ;; nn|loader|viz|dist) echo 5 ;;
    optim|models) echo 6 ;; train|export) echo 7 ;; tools) echo 8 ;; *) echo "" ;;
  esac
}

header_module() {
  case $1 in
    error.h|os.h|rng.h) echo base ;;
    backend.h|km_math.h|km_elem.h|cpu_common.h|thread_pool.h|vec.h|cuda_*.h|cuda/*.h|cpu/*.h|emu.h|emu_internal.h|cublas_v2.h|nccl.h) echo kernels ;;
    tensor.h) echo core ;; autograd.h) echo autograd ;; ops.h) echo ops ;; data.h) echo data ;;
    config.h|schema.h) echo config ;; trace.h) echo trace ;; nn.h) echo nn ;;
    loader.h|feeder.h) echo loader ;; viz.h) echo viz ;; optim.h) echo optim ;; models.h) echo models ;;
    train.h|report.h|checkpoint.h|evaluate.h) echo train ;; dist.h) echo dist ;; bench.h) echo tools ;;
    export.h|export_internal.h|onnx.pb-c.h) echo export ;;
    *) echo "" ;;
  esac
}

file_module() {
  case $1 in
    include/*) header_module "${1#include/}" ;;
    kernels/*) echo kernels ;;
    models/*) echo models ;;
    tools/*) echo tools ;;
    src/*/*) f=${1#src/}; echo "${f%%/*}" ;;
    *) echo "" ;;
  esac
}

bad=0; checked=0
for f in $(find include src kernels models tools -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' \) 2>/dev/null | sort); do
  m=$(file_module "$f"); r=$(rank "$m")
  if [ -z "$r" ]; then echo "check-layers: $f: no layer for module '$m' (add it to scripts/check-layers.sh)"; bad=1; continue; fi
  for h in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
    checked=$((checked + 1))
    hm=$(header_module "$h"); hr=$(rank "$hm")
    if [ -z "$hr" ]; then
      echo "check-layers: $f includes \"$h\", which has no layer (add it to scripts/check-layers.sh)"; bad=1
    elif [ "$hm" != "$m" ] && [ "$hr" -ge "$r" ]; then
      echo "check-layers: $f ($m, layer $r) includes \"$h\" ($hm, layer $hr): an include must point down"; bad=1
    fi
  done
done
[ $bad = 0 ] && echo "check-layers: $checked includes checked, every one points down"
exit $bad
