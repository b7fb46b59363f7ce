"""eval.py throughput: test images/s of the evaluation loop versus the bare model forward on pre-made tensors.

    python bench/eval_throughput.py                       # 40 synthetic 640x360 frames, resnet18 at img 96, batch 8
    python bench/eval_throughput.py --img_size 180 --n 60
    python bench/eval_throughput.py --data artifacts/bdd_simple_1k_split --split test

Rows (same model, input size, batch and precision; ratios against the first row):
  bare forward   model(x) on a pre-made batch in memory (inference_mode + the autocast rule): the limit
  predict        bddseg.inference.predict: decode + resize, forward, logits resized to the mask, argmax, loss
  evaluate       bddseg.evaluate.evaluate_split: predict + metrics + per-image report files + W&B images
  eval.py        the whole command (incl. W&B offline run and the report page; imports excluded)
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bddseg import config, device as dev, inference
from bddseg.checkpoint import save_checkpoint
from bddseg.eval_data import eval_loader
from bddseg.models import build_model

ROOT = config.ROOT
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def eval_script():
    """eval.py as a module, loaded from its file (an entry point, not part of the installed package)."""
    spec = importlib.util.spec_from_file_location("eval_script", ROOT / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="processed dataset folder (default: make --n synthetic frames in a temp folder)")
    p.add_argument("--n", type=int, default=40, help="synthetic frames to generate (60%% go to the test split)")
    p.add_argument("--split", default="test")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--img_size", type=int, default=96)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--mixed_precision", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per row (best kept)")
    return p.parse_args()


def make_data(tmp, n):
    """n synthetic 640x360 frames through the data step (no W&B), most of them in the test split."""
    subprocess.run([sys.executable, str(ROOT / "data" / "prepare.py"), "--n", str(n), "--out", str(tmp),
                    "--fractions", "0.2,0.2,0.6", "--no-wandb", "--name", "bench_raw", "--split-name", "bench"],
                   check=True, stdout=subprocess.DEVNULL)
    return Path(tmp) / "bench"


def best_of(fn, repeats):
    """Smallest wall time of `repeats` calls (after one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    args = parse_args()
    dev.set_threads()
    device = dev.get_device()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("WANDB_DIR", str(tmp))
        data = Path(args.data) if args.data else make_data(tmp, args.n)
        model, _ = build_model(args.arch, len(config.BDD_CLASSES), pretrained=False)
        frame = config.frame_size(args.img_size)
        meta = {"arch": args.arch, "n_classes": len(config.BDD_CLASSES),
                "classes": {str(k): v for k, v in config.BDD_CLASSES.items()}, "img_size": args.img_size,
                "frame_size": list(frame), "dataset": data.name, "data_path": str(data), "run_id": "bench",
                "run_name": "bench", "project": "bench", "metrics": {"miou": 0.0}, "config": {}}
        ckpt = save_checkpoint(tmp / "models" / "bench", model, meta)
        argv = ["--model", str(ckpt), "--data", str(data), "--split", args.split, "--batch_size",
                str(args.batch_size), "--num_workers", str(args.num_workers), "--mixed_precision",
                str(bool(args.mixed_precision)), "--out", str(tmp / "eval")]
        ev = eval_script()
        eargs = ev.parse_args(argv)
        model, meta, _ = ev.get_model(eargs, device)
        _, df = ev.get_eval_data(meta, eargs, ckpt)
        n = len(df)
        x = torch.rand(args.batch_size, 3, *frame, device=device)
        if dev.use_channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        n_batches = -(-n // args.batch_size)

        def bare():
            with torch.inference_mode(), dev.autocast_context(device, eargs.mixed_precision):
                for _ in range(n_batches):
                    model(x)

        def predict():
            loader = eval_loader(df, meta, eargs.batch_size, eargs.num_workers)
            for _ in inference.predict(model, loader, device, False, eargs.mixed_precision):
                pass

        def evaluate():
            out = tmp / "evaluate"
            out.mkdir(exist_ok=True)
            ev.evaluate(model, meta, df, eargs, device, out)

        rows = [("bare forward", best_of(bare, args.repeats), n_batches * args.batch_size),
                ("predict", best_of(predict, args.repeats), n),
                ("evaluate", best_of(evaluate, args.repeats), n),
                ("eval.py", best_of(lambda: ev.main(argv), args.repeats), n)]
    base = rows[0][2] / rows[0][1]
    print(f"\n{args.arch} img {frame[0]}x{frame[1]}, batch {args.batch_size}, "
          f"{dev.precision_name(device, eargs.mixed_precision)}, {torch.get_num_threads()} threads, {device}; "
          f"{n} {args.split} images of {data.name}, masks at their own resolution")
    print(f"{'stage':<14}{'images':>8}{'seconds':>10}{'images/s':>10}{'ratio':>8}")
    for name, secs, imgs in rows:
        print(f"{name:<14}{imgs:>8}{secs:>10.2f}{imgs / secs:>10.1f}{imgs / secs / base:>8.2f}")


if __name__ == "__main__":
    main()
