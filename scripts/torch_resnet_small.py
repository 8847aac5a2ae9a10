#!/usr/bin/env python3
"""torch_resnet_small.py: the same resnet_small step in PyTorch, for a side-by-side ratio.

    python3 scripts/torch_resnet_small.py [--device cpu|cuda] [--batch 128] [--rounds 3]
        [--seconds 3] [--channels-last] [--threads N] [--e2e-steps 200] [--workers 2]

The model and the step are resnet_small and recipe (docs/design.md), as nostall's
`./bench train` runs them:
  compute-only  uint8 batches of data/fashion-mnist/train.packed already on the device,
                normalized there, forward, cross-entropy, backward, SGD (nesterov 0.9,
                weight decay 5e-4, a fixed learning rate: the schedule costs nothing).
                Images/s per round; the median of the rounds is printed. On a GPU the
                time is taken with CUDA events around the timed steps.
  end to end    a DataLoader over the PNG folder (PIL decodes, random crop with 2 pixels
                of padding, horizontal flip), --workers processes, --e2e-steps steps
                after two warm-up steps, as nostall's end-to-end row.
Run it in the same session as `./bench train` (CPU) or `./bench train --set
train.device=cuda` (GPU), so the two rates are a ratio measured side by side.
Nothing here is part of the build or the tests; it needs PyTorch (Debian:
python3-torch) and, for end to end, PIL (python3-pil).
"""
import argparse
import os
import statistics
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.2860, 0.3530


class Block(nn.Module):
    """BasicBlock(cin->cout, stride): conv3x3 -> BN -> ReLU -> conv3x3 -> BN, + shortcut, ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


def resnet_small():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def read_packed(path, count):
    """The first `count` images (N,1,28,28 uint8) and labels of a nostall packed file."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:8] != b"NSPACKED":
            sys.exit(f"torch_resnet_small: {path} is not a nostall packed file; run `make data` first")
        n, h, w, c = struct.unpack_from("<QIII", head, 16)
        (images_at,) = struct.unpack_from("<Q", head, 40)
        count = min(count, n)
        labels = torch.frombuffer(bytearray(f.read(4 * count)), dtype=torch.int32).long()
        f.seek(images_at)
        images = torch.frombuffer(bytearray(f.read(count * h * w * c)), dtype=torch.uint8)
    return images.view(count, h, w, c).permute(0, 3, 1, 2).contiguous(), labels


def make_step(model, opt, memory_format):
    def step(x_u8, y):
        x = (x_u8.float() / 255.0 - MEAN) / STD
        loss = F.cross_entropy(model(x.contiguous(memory_format=memory_format)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def timed_rate(step, batches, batch, seconds, device):
    """Images/s over about `seconds` of steps cycling through `batches`."""
    cuda = device.type == "cuda"
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or steps < 3:
        step(*batches[steps % len(batches)])
        steps += 1
    if cuda:
        end.record()
        end.synchronize()
        elapsed = start.elapsed_time(end) * 1e-3
    else:
        elapsed = time.perf_counter() - t0
    return steps * batch / elapsed


class PngFolder(torch.utils.data.Dataset):
    """data/fashion-mnist/train/<class>/<file>.png, decoded by PIL, cropped and flipped."""

    def __init__(self, root):
        from PIL import Image  # only end to end needs it
        self.image = Image
        classes = sorted(os.listdir(root))
        self.items = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
                      for f in sorted(os.listdir(os.path.join(root, c)))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        with self.image.open(path) as im:
            x = torch.frombuffer(bytearray(im.convert("L").tobytes()), dtype=torch.uint8).view(1, 28, 28)
        x = F.pad(x, (2, 2, 2, 2))
        dy, dx = torch.randint(0, 5, (2,)).tolist()
        x = x[:, dy:dy + 28, dx:dx + 28]
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        return x, label


def end_to_end(step, args, device):
    ds = PngFolder(os.path.join(args.data, "train"))
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                     pin_memory=device.type == "cuda", drop_last=True,
                                     persistent_workers=args.workers > 0)
    it, t0 = iter(dl), None
    for i in range(args.e2e_steps + 2):  # the first two: warm-up, as nostall's row
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = next(it)
        step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.e2e_steps * args.batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--data", default="data/fashion-mnist")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    ap.add_argument("--e2e-steps", type=int, default=200, help="0 skips end to end")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_resnet_small: --device cuda, but PyTorch sees no GPU")
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = resnet_small().to(device).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    step = make_step(model, opt, fmt)

    images, labels = read_packed(os.path.join(args.data, "train.packed"), 4 * args.batch)
    batches = [(images[i:i + args.batch].to(device), labels[i:i + args.batch].to(device))
               for i in range(0, 4 * args.batch, args.batch)]
    for b in batches[:2]:  # warm-up: allocator, cuDNN's algorithm choice
        step(*b)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"PyTorch {torch.__version__} resnet_small on {args.device} ({name}), batch {args.batch}, "
          f"{'channels-last' if args.channels_last else 'NCHW'}; {args.rounds} rounds of {args.seconds:.1f} s")
    rates = []
    for _ in range(args.rounds):
        rates.append(timed_rate(step, batches, args.batch, args.seconds, device))
    print(f"compute-only  batch {args.batch:4d}: {statistics.median(rates):7.0f} images/s  "
          f"({' '.join(f'{r:.0f}' for r in rates)})")
    if args.e2e_steps > 0:
        try:
            rate = end_to_end(step, args, device)
        except ImportError:
            print("end to end: skipped, PIL is not installed (Debian: python3-pil)")
        else:
            print(f"end to end    batch {args.batch:4d}: {rate:7.0f} images/s (PNG folder, DataLoader, "
                  f"{args.workers} workers), {100 * rate / statistics.median(rates):.0f}% of compute-only")


if __name__ == "__main__":
    main()
