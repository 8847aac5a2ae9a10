#!/usr/bin/env python3
"""interop.py: nostall's exported model against onnxruntime and PyTorch (make interop).

    python scripts/interop.py --onnx M.onnx --safetensors M.safetensors --logits L.bin
        [--report docs/runs/interop.txt] [--doc docs/export.md] [--note TEXT]...

L.bin is `./eval CHECKPOINT --logits L.bin --limit N`: magic "NSLOGITS", u32 n, channels,
height, width, classes; n images as uint8 CHW (the pixels nostall fed the model, before
normalization), n labels as int32, n*classes float32 logits; all little-endian.
Checks, one line each with what was measured:
  onnx.checker         the ONNX file passes onnx.checker (full_check: shapes inferred)
  metadata             mean/std/classes/input shape agree between the two files and L.bin
  onnxruntime          its logits on the n images match nostall's: max |diff| <= 1e-4 x
                       max |nostall logit|, and the same argmax on every image
  torch load           safetensors' load_file, then load_state_dict(strict=True) into
                       scripts/torch_resnet_small.py's resnet_small()
  torch                its eval-mode logits match nostall's the same way
  torch AdamW          (--adamw) torch.optim.AdamW given nostall's initial weights and 20
                       steps of gradients ends within 1e-5 x max |w| of nostall's weights
The images are normalized here as nostall does, x = (pixel / 255 - mean) / std, with mean
and std from the files' metadata. Exit status 1 if any check fails. --report writes the
lines to a file; --doc copies that file between the <!-- interop:begin --> and
<!-- interop:end --> lines of a Markdown file, so the numbers there are never typed.
"""
import argparse
import os
import struct
import sys

import numpy as np

TOLERANCE = 1e-4  # relative to the largest |logit| of nostall's


def read_logits(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:8] != b"NSLOGITS":
        sys.exit(f"interop: {path} is not an NSLOGITS file (./eval --logits writes one)")
    n, c, h, w, k = struct.unpack_from("<5I", raw, 8)
    at = 28
    images = np.frombuffer(raw, np.uint8, n * c * h * w, at).reshape(n, c, h, w)
    at += n * c * h * w
    labels = np.frombuffer(raw, "<i4", n, at)
    at += 4 * n
    logits = np.frombuffer(raw, "<f4", n * k, at).reshape(n, k)
    if at + 4 * n * k != len(raw):
        sys.exit(f"interop: {path} is {len(raw)} bytes, its header promises {at + 4 * n * k}")
    return images, labels, logits.astype(np.float32)


def compare(name, got, want):
    """One check line: max |diff| against the tolerance, argmax agreement."""
    scale = float(np.abs(want).max())
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    agree = int((got.argmax(1) == want.argmax(1)).sum())
    n = want.shape[0]
    ok = diff <= TOLERANCE * scale and agree == n
    line = (f"{name:<12} {'ok  ' if ok else 'FAIL'} max |diff| {diff:.3g} (limit {TOLERANCE:g} x max |logit| "
            f"{scale:.4g} = {TOLERANCE * scale:.3g}), argmax agrees on {agree}/{n} images")
    return ok, line


def check_adamw(path, torch):
    """torch.optim.AdamW from nostall's initial weights over its gradients, against its weights."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:8] != b"NSADAMW\0":
        sys.exit(f"interop: {path} is not an NSADAMW file (tests/interop_adamw writes one)")
    n, steps = struct.unpack_from("<2I", raw, 8)
    lr, b1, b2, eps, wd = struct.unpack_from("<5d", raw, 16)
    at = 56
    w0 = np.frombuffer(raw, "<f4", n, at)
    grads = np.frombuffer(raw, "<f4", steps * n, at + 4 * n).reshape(steps, n)
    w1 = np.frombuffer(raw, "<f4", n, at + 4 * n * (steps + 1))
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    for s in range(steps):
        p.grad = torch.from_numpy(grads[s].copy())
        opt.step()
    got = p.detach().numpy()
    scale = float(np.abs(w1).max())
    diff = float(np.abs(got.astype(np.float64) - w1.astype(np.float64)).max())
    ok = diff <= 1e-5 * scale
    return ok, (f"{'torch AdamW':<12} {'ok  ' if ok else 'FAIL'} {steps} steps on {n} weights: max |diff| {diff:.3g} "
                f"(limit 1e-5 x max |w| {scale:.4g} = {1e-5 * scale:.3g})")


def copy_into_doc(doc, report):
    """The report, as a code block, between doc's interop markers."""
    begin, end = "<!-- interop:begin -->", "<!-- interop:end -->"
    with open(doc) as f:
        text = f.read()
    if begin not in text or end not in text:
        sys.exit(f"interop: {doc} has no {begin} ... {end} block to copy {report} into")
    with open(report) as f:
        body = f.read()
    head, rest = text.split(begin, 1)
    text = head + begin + "\n\n```\n" + body + "```\n\n" + end + rest.split(end, 1)[1]
    with open(doc, "w") as f:
        f.write(text)


def floats(text):
    return [float(v) for v in text.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--safetensors", required=True)
    ap.add_argument("--logits", required=True)
    ap.add_argument("--adamw", help="tests/interop_adamw's file: nostall's AdamW, to repeat in PyTorch")
    ap.add_argument("--report", help="also write the lines here")
    ap.add_argument("--doc", help="copy the report into this Markdown file between its interop markers")
    ap.add_argument("--note", action="append", default=[], help="a line for the report's head")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_resnet_small import resnet_small

    images, labels, want = read_logits(args.logits)
    lines, ok_all = [], True

    def report(ok, line):
        nonlocal ok_all
        ok_all &= ok
        lines.append(line)
        print(line, flush=True)

    model = onnx.load(args.onnx)
    try:
        onnx.checker.check_model(model, full_check=True)
        report(True, f"{'onnx.checker':<12} ok   opset {model.opset_import[0].version}, "
                     f"IR version {model.ir_version}, {len(model.graph.node)} nodes")
    except onnx.checker.ValidationError as e:
        report(False, f"{'onnx.checker':<12} FAIL {e}")

    # the metadata both files carry, and the logits file's shape
    onnx_meta = {p.key: p.value for p in model.metadata_props}
    with safe_open(args.safetensors, "np") as f:
        st_meta = f.metadata()
    n, c, h, w = images.shape
    keys = ("mean", "std", "classes", "input_shape")
    same = all(onnx_meta.get(k) == st_meta.get(k) for k in keys)
    shape_ok = onnx_meta.get("input_shape") == f"{c},{h},{w}" and onnx_meta.get("classes") == str(want.shape[1])
    report(same and shape_ok, f"{'metadata':<12} {'ok  ' if same and shape_ok else 'FAIL'} "
           + ", ".join(f"{k} {onnx_meta.get(k)}/{st_meta.get(k)}" for k in keys)
           + f" (onnx/safetensors); logits file {n} x ({c},{h},{w}) -> {want.shape[1]}")
    mean = np.array(floats(onnx_meta["mean"]), np.float32).reshape(1, -1, 1, 1)
    std = np.array(floats(onnx_meta["std"]), np.float32).reshape(1, -1, 1, 1)
    x = ((images.astype(np.float32) / np.float32(255) - mean) / std).astype(np.float32)

    sess = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"images": x})[0]
    report(*compare("onnxruntime", got, want))

    state = load_file(args.safetensors)
    net = resnet_small()
    try:
        net.load_state_dict(state, strict=True)
        report(True, f"{'torch load':<12} ok   load_state_dict(strict=True) took all {len(state)} tensors")
    except RuntimeError as e:
        report(False, f"{'torch load':<12} FAIL {str(e).splitlines()[0]}")
    else:
        net.eval()
        with torch.no_grad():
            got = net(torch.from_numpy(x)).numpy()
        report(*compare("torch", got, want))

    if args.adamw:
        report(*check_adamw(args.adamw, torch))

    accuracy = int((want.argmax(1) == labels).sum())
    lines.append(f"(nostall's own accuracy on these {n} images: {accuracy}/{n}; a short run, not a trained model)")
    print(lines[-1])
    if args.report:
        head = [f"# {args.report}: written by make interop (scripts/interop.sh, scripts/interop.py); "
                "do not edit by hand"] + [f"# {note}" for note in args.note] + [
                f"# onnx {onnx.__version__}, onnxruntime {ort.__version__}, torch {torch.__version__}, "
                f"numpy {np.__version__}, python {sys.version.split()[0]}"]
        with open(args.report, "w") as f:
            f.write("\n".join(head + lines) + "\n")
        if args.doc:
            copy_into_doc(args.doc, args.report)
    print("interop: " + ("all checks passed" if ok_all else "FAILED"))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
