"""Training throughput: a full train.py epoch vs the bare model step (the limit) vs the course-way fastai pipeline.

    python bench/train_throughput.py                       # synthetic data (--n 200), resnet18 at 96 and 180 px
    python bench/train_throughput.py --data artifacts/bdd_simple_1k_split --sizes 180 --n_steps 20

Rows per size (same arch, frame size, batch size, the project's U-Net in all of them):
- bare bf16 / bare fp32: forward + backward + fused AdamW step (train.py's optimizer and memory layout) on pre-made
  tensors (no data, no metrics, no logging);
- train.py: images/s of a full epoch (train + validation + metrics + checkpoint + logging, from metrics.jsonl);
- course way: fastai DataBlock decoding and resizing the full-size files every epoch with aug_transforms
  (bench/course_way.py), fp32, one DiceMulti-based metric object per class plus one for mIoU (as the course's utils
  did); the project's U-Net, so the row measures the pipeline.
Every figure is the best of several windows/epochs (the first epoch, with oneDNN's kernel set-up, is left out), which
keeps the ratios meaningful on a shared machine. Targets: train.py >= 85% of bare bf16, and >= 2.5x the course way.
Results also go to bench/out/.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bddseg import config
from bddseg import device as dev
from bddseg.models import build_model
from course_way import course_dls

ROOT = Path(__file__).resolve().parents[1]


def get_dataset(args, tmp):
    """--data, or a synthetic processed dataset made by data/prepare.py into tmp."""
    if args.data:
        return Path(args.data)
    cmd = [sys.executable, str(ROOT / "data/prepare.py"), "--source", "synthetic", "--n", str(args.n), "--seed", "0",
           "--out", str(tmp), "--no-wandb"]
    subprocess.run(cmd, check=True, cwd=tmp, env={**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp)})
    return tmp / config.PROCESSED_DATA_AT


def bare_step(arch, size, bs, steps, bf16, warmup=3, windows=3):
    """Images/s of forward + backward + AdamW on random tensors (autocast rule or fp32); best of `windows` runs."""
    model, _ = build_model(arch, len(config.BDD_CLASSES), pretrained=False)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, betas=(0.9, 0.99), eps=1e-5, fused=True)  # as train.py
    x, y = torch.rand(bs, 3, *size), torch.randint(0, len(config.BDD_CLASSES), (bs, *size))
    if dev.use_channels_last("cpu"):  # the layout train.py uses
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(warmup + steps * windows):
        if i >= warmup and (i - warmup) % steps == 0:
            times.append(time.perf_counter())
        with dev.autocast_context("cpu", bf16):
            loss = F.cross_entropy(model(x).float(), y, ignore_index=config.IGNORE)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter())
    return bs * steps / min(b - a for a, b in zip(times, times[1:]))


def train_py(data, img_size, bs, arch, tmp, epochs):
    """(images/s of its fastest epoch after the first, process wall s, n_train) of a real offline `train.py` run."""
    out = tmp / f"models{img_size}"
    cmd = [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--img_size", str(img_size), "--batch_size",
           str(bs), "--arch", arch, "--epochs", str(epochs), "--pretrained", "False", "--output", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_METRICS_FILE"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=tmp, env={**env, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp)},
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    run = next(out.glob("*/*"))
    n_train = json.loads((run / "config.json").read_text())["n_train"]
    rows = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    return n_train // bs * bs / min(r["time"] for r in rows[1:]), wall, n_train  # train drops a partial batch


def course_way(data, size, bs, arch, epochs):
    """Images/s (fastest epoch after the first) of the course's pipeline: DataBlock + Resize from the files,
    aug_transforms, fp32, fastai Adam, DiceMulti x8."""
    from fastai.vision.all import CrossEntropyLossFlat, DiceMulti, Learner
    from fastai.callback.core import Callback

    class CourseIOU(DiceMulti):
        """The course's MIOU / BackgroundIOU / RoadIOU ... : each its own DiceMulti accumulator."""

        def __init__(self, c=None):
            super().__init__()
            self.c = c

        @property
        def value(self):
            ious = {c: self.inter[c] / (self.union[c] - self.inter[c]) if self.union[c] > 0 else np.nan
                    for c in self.inter}
            return np.nanmean(list(ious.values())) if self.c is None else ious.get(self.c, np.nan)

        @property
        def name(self):
            return "miou" if self.c is None else f"{config.class_key(config.BDD_CLASSES[self.c])}_iou"

    class EpochTimes(Callback):
        def before_epoch(self):
            self.t0 = time.perf_counter()

        def after_epoch(self):
            self.times = getattr(self, "times", []) + [time.perf_counter() - self.t0]

    dls = course_dls(data, size, bs)
    n_train = len(dls.train_ds)
    model, _ = build_model(arch, len(config.BDD_CLASSES), pretrained=False)
    metrics = [CourseIOU()] + [CourseIOU(c) for c in config.BDD_CLASSES]
    timer = EpochTimes()
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(axis=1, ignore_index=config.IGNORE), metrics=metrics,
                    cbs=[timer])
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, 2e-3)
    return n_train // bs * bs / min(timer.times[1:])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="processed dataset folder (default: make a synthetic one with --n images)")
    p.add_argument("--n", type=int, default=200, help="synthetic images when --data is not given")
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 180], help="frame heights")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--n_steps", type=int, default=10, help="timed bare steps per window (best of 3 windows)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of train.py and of the course way (best after 1st)")
    p.add_argument("--out", default=str(ROOT / "bench/out"))
    args = p.parse_args()
    threads = dev.set_threads()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = get_dataset(args, tmp)
        for h in args.sizes:
            size = config.frame_size(h)
            r = {"img_size": h, "frame": f"{size[0]}x{size[1]}", "batch_size": args.batch_size, "arch": args.arch}
            r["bare_bf16"] = bare_step(args.arch, size, args.batch_size, args.n_steps, True)
            r["bare_fp32"] = bare_step(args.arch, size, args.batch_size, args.n_steps, False)
            r["train_py"], r["train_py_wall_s"], r["n_train"] = train_py(data, h, args.batch_size, args.arch, tmp,
                                                                         args.epochs)
            r["course_way"] = course_way(data, size, args.batch_size, args.arch, args.epochs)
            r["train_py_vs_bare_bf16"] = r["train_py"] / r["bare_bf16"]
            r["train_py_vs_course"] = r["train_py"] / r["course_way"]
            results.append(r)
            print(f"done {h}px: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in r.items()), file=sys.stderr, flush=True)
    print(f"\n{args.arch}, batch {args.batch_size}, {threads} threads, precision on this CPU: "
          f"{dev.precision_name('cpu')}; images/s (train images per second of wall clock)")
    print(f"{'size':>9} {'bare bf16':>10} {'bare fp32':>10} {'train.py':>9} {'course':>8} "
          f"{'train.py/bare bf16':>19} {'train.py/course':>16}")
    for r in results:
        print(f"{r['frame']:>9} {r['bare_bf16']:10.2f} {r['bare_fp32']:10.2f} {r['train_py']:9.2f} "
              f"{r['course_way']:8.2f} {r['train_py_vs_bare_bf16']:18.0%} {r['train_py_vs_course']:15.2f}x")
    print("targets: train.py >= 85% of bare bf16, >= 2.5x course way")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_throughput.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
