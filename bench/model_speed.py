"""Per-arch U-Net size and CPU step time: fp32 vs bf16 autocast (+ channels_last), fastai's DynamicUnet as baseline.

    python bench/model_speed.py                      # every registry arch + a few timm ones, batch 8 at 96x170
    python bench/model_speed.py --archs resnet18 timm/convnext_tiny --size 180 --iters 5
    python bench/model_speed.py --archs resnet18 --size 180 --decoder_widths 16 8    # train.py --decoder_width
"""
import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bddseg import config
from bddseg.models import ARCHS, DECODER_WIDTH, build_model

TIMM = ["timm/resnet18", "timm/convnext_tiny", "timm/efficientnet_b0", "timm/mobilenetv3_small_100"]
BASELINES = ["fastai/resnet18"]  # the course model: unet_learner's DynamicUnet (also fastai/resnet34, ...)


def fastai_unet(arch, n_classes, size):
    """fastai's DynamicUnet as unet_learner builds it (no normalisation inside; it is cheap anyway)."""
    from fastai.vision.all import DynamicUnet, create_body
    import torchvision
    body = create_body(getattr(torchvision.models, arch)(), pretrained=False)
    return DynamicUnet(body, n_classes, size)


def step(model, x, y, bf16, fmt):
    """Seconds of one forward + backward (cross-entropy loss) with the model and input in memory format `fmt`."""
    model, x = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def bench(arch, batch, size, iters, width=DECODER_WIDTH, warmup=2):
    """(params, forward GFLOP per image, fp32 s, bf16 s, bf16 + channels_last s) per step. The three variants run
    interleaved and each keeps its fastest step, so a busy shared machine disturbs them alike and least."""
    torch.manual_seed(0)
    n = len(config.BDD_CLASSES)
    model = (fastai_unet(arch.split("/")[1], n, size) if arch.startswith("fastai/")
             else build_model(arch, n, pretrained=False, width=width)[0]).train()
    x, y = torch.rand(batch, 3, *size), torch.randint(0, n, (batch, *size))
    with FlopCounterMode(display=False) as flops:
        model(x[:1])
    variants = [(False, torch.contiguous_format), (True, torch.contiguous_format), (True, torch.channels_last)]
    times = [[step(model, x, y, *v) for v in variants] for _ in range(warmup + iters)]  # warm-up: oneDNN kernels
    best = [min(col) for col in zip(*times[warmup:])]
    return (sum(p.numel() for p in model.parameters()), flops.get_total_flops() / 1e9, *best)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=[*BASELINES, *ARCHS, *TIMM])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=96, help="height; width is 16:9")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--decoder_widths", type=int, nargs="+", default=[DECODER_WIDTH],
                    help="decoder channels at full size (train.py --decoder_width); each arch runs with each")
    args = ap.parse_args()
    size = config.frame_size(args.size)
    print(f"load average before: {os.getloadavg()[0]:.1f} (other processes slow every figure down; rerun when ~0)")
    print(f"batch {args.batch} at {size[0]}x{size[1]}, forward+backward, best of {args.iters} steps, "
          f"{torch.get_num_threads()} threads; ms per step (images/s); GFLOP = forward per image; "
          f"last column: bf16+CL speed relative to the first row")
    print(f"{'arch':28} {'params':>8} {'GFLOP/img':>9} {'fp32':>14} {'bf16':>14} {'bf16+CL':>14} "
          f"{'fp32/bf16+CL':>12} {'vs ' + args.archs[0]:>20}")
    base = None
    runs = [(arch, w) for arch in args.archs  # fastai's DynamicUnet has its own decoder: one run
            for w in ([DECODER_WIDTH] if arch.startswith("fastai/") else args.decoder_widths)]
    for arch, width in runs:
        n, gflop, fp32, bf16, cl = bench(arch, args.batch, size, args.iters, width)
        base = base or cl
        cols = " ".join(f"{t * 1e3:7.0f} ({args.batch / t:4.1f})" for t in (fp32, bf16, cl))
        label = arch if width == DECODER_WIDTH else f"{arch} decoder {width}"
        print(f"{label:28} {n / 1e6:7.1f}M {gflop:9.2f} {cols} {fp32 / cl:11.2f}x {base / cl:19.2f}x", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
