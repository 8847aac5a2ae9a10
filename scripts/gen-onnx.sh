#!/bin/sh
# gen-onnx.sh OUTDIR — generates OUTDIR/onnx.pb-c.c and .h, the ONNX exporter's
# protobuf code, with protoc-c from the onnx.proto that Debian's python3-onnx ships
# (nothing is vendored or downloaded). Says what is missing, and how to get it.
set -e
OUT=$1
need=""
command -v protoc-c >/dev/null 2>&1 || need="$need protobuf-c-compiler"
pkg-config --exists libprotobuf-c 2>/dev/null || [ -f /usr/include/protobuf-c/protobuf-c.h ] || need="$need libprotobuf-c-dev"
# onnx.proto is proto2, which protoc-c accepts (onnx.proto3 is the same schema in proto3)
PROTO=$(dpkg -L python3-onnx 2>/dev/null | grep '/onnx/onnx\.proto$' | head -n 1)
[ -n "$PROTO" ] && [ -f "$PROTO" ] || need="$need python3-onnx"
if [ -n "$need" ]; then
  echo "gen-onnx: the ONNX export (src/export/onnx.c) needs the Debian packages:$need" >&2
  echo "gen-onnx: HINT: run 'make setup' (or: sudo apt-get install$need)" >&2
  exit 1
fi
mkdir -p "$OUT"
protoc-c --c_out="$OUT" -I"$(dirname "$PROTO")" "$PROTO"
echo "gen-onnx: $OUT/onnx.pb-c.c from $PROTO"
