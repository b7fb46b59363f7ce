"""eval.py throughput: test images/s of the evaluation loop versus the bare model forward on pre-made tensors.

    python bench/eval_throughput.py                 # 120 synthetic 1280x720 frames, resnet18 at img 96 and 180, batch 8
    python bench/eval_throughput.py --img_sizes 180 --n 60 --size 640x360
    python bench/eval_throughput.py --data artifacts/bdd_simple_1k_split --split test

Rows per img size (same model, input size, batch and precision; ratios against the first row):
  bare forward   model(x) on a pre-made batch in memory (inference_mode + the autocast rule): the limit
  predict        bddseg.inference.predict: decode + resize, forward, logits resized to the mask, argmax, loss
  evaluate       bddseg.evaluate.evaluate_split: predict + metrics + per-image report files + W&B images
  eval.py        the whole command (incl. W&B offline run and the report page; imports excluded)
The model is first fitted for --fit_steps steps on the train split: eval's CPU resize interpolates only at class
boundaries (inference.upsampled_argmax), and an untrained model's noisy logits have boundaries everywhere.
Then the report folder's size (thumbnails per image, full-size files per worst image) and its projection for a
2,000-image test split (BDD100K) at the default --report_images.
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
import torch.nn.functional as F

from bddseg import config, device as dev, eval_report, inference
from bddseg.checkpoint import save_checkpoint
from bddseg.eval_data import decode_workers, eval_loader
from bddseg.loaders import get_dls
from bddseg.models import build_model

ROOT = config.ROOT


def eval_script():
    """eval.py as a module, loaded from its file (an entry point, not part of the installed package)."""
    spec = importlib.util.spec_from_file_location("eval_script", ROOT / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="processed dataset folder (default: make --n synthetic frames in a temp folder)")
    p.add_argument("--n", type=int, default=120, help="synthetic frames to generate (60%% go to the test split)")
    p.add_argument("--size", default="1280x720", help="synthetic frame WxH (BDD100K: 1280x720)")
    p.add_argument("--split", default="test")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--img_sizes", default="96,180", help="model input heights, comma-separated")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_workers", type=int, default=None, help="eval.py's --num_workers (default: its own)")
    p.add_argument("--report_images", type=int, default=None,
                   help="eval.py's --report_images (default: its 50 per 2,000 images, scaled to the split)")
    p.add_argument("--project", type=int, default=2000, help="test images to project the report size for")
    p.add_argument("--mixed_precision", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="timed passes per row after a warm-up (best kept)")
    p.add_argument("--fit_steps", type=int, default=40,
                   help="training steps on the train split before timing, so that predictions have regions as a "
                        "trained model's do (eval's resize work depends on how many class boundaries there are)")
    return p.parse_args()


def make_data(tmp, n, size):
    """n synthetic frames of `size` through the data step (no W&B), most of them in the test split."""
    subprocess.run([sys.executable, str(ROOT / "data" / "prepare.py"), "--n", str(n), "--size", size, "--out", str(tmp),
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


def folder_bytes(folder, pattern="*") -> int:
    """Total bytes of the files under `folder` matching `pattern`."""
    return sum(p.stat().st_size for p in Path(folder).rglob(pattern) if p.is_file())


def report_size(folder, n_images, k, k_project, project):
    """Print the report folder's bytes: fixed part, per-image thumbnails, per-worst-image full-size files (`k` here),
    and the projection for `project` images at `k_project` full-size ones."""
    total = folder_bytes(folder)
    full = folder_bytes(folder, f"*_{eval_report.FULL}.jpg") + folder_bytes(folder / eval_report.MASKS)
    n_full = min(k, n_images)
    thumbs = folder_bytes(folder / eval_report.IMAGES, "*.jpg") - folder_bytes(folder, f"*_{eval_report.FULL}.jpg")
    index = (folder / eval_report.INDEX).stat().st_size
    fixed = total - full - thumbs - index
    per_thumb, per_full, per_row = thumbs / n_images, full / max(n_full, 1), index / n_images
    projected = fixed + project * (per_thumb + per_row) + min(k_project, project) * per_full
    print(f"report folder: {total / 1e6:.2f} MB for {n_images} images ({n_full} full size): thumbnails "
          f"{per_thumb / 1e3:.1f} kB/image, full-size files {per_full / 1e3:.1f} kB/worst image, index.html "
          f"{per_row:.0f} B/image, fixed {fixed / 1e3:.0f} kB")
    print(f"projected for {project} images, --report_images {k_project}: {projected / 1e6:.1f} MB (bound 100 MB)")


def fit(model, data, frame, bs, steps, device):
    """A few training steps (cross-entropy, AdamW) so that the model predicts regions rather than noise."""
    if steps < 1:
        return
    t0, dls = time.perf_counter(), get_dls(data, frame, bs, device=device)
    opt, done = torch.optim.AdamW(model.parameters(), 3e-3), 0
    model.to(device).train()
    while done < steps:
        for x, y in dls.train:
            with dev.autocast_context(device, True):
                loss = F.cross_entropy(model(x).float(), y, ignore_index=config.IGNORE)
            loss.backward()
            opt.step()
            opt.zero_grad()
            done += 1
            if done == steps:
                break
    model.eval()
    print(f"fitted {steps} steps in {time.perf_counter() - t0:.0f} s (last loss {loss.item():.3f})", file=sys.stderr)


def bench_size(args, data, tmp, device, img_size):
    """Time the rows at one input size; (rows, frame, images, precision, report folder, report_images, decode
    workers)."""
    model, _ = build_model(args.arch, len(config.BDD_CLASSES), pretrained=False)
    frame = config.frame_size(img_size)
    fit(model, data, frame, args.batch_size, args.fit_steps, device)
    meta = {"arch": args.arch, "n_classes": len(config.BDD_CLASSES),
            "classes": {str(k): v for k, v in config.BDD_CLASSES.items()}, "img_size": img_size,
            "frame_size": list(frame), "dataset": data.name, "data_path": str(data), "run_id": "bench",
            "run_name": "bench", "project": "bench", "metrics": {"miou": 0.0}, "config": {}}
    ckpt = save_checkpoint(tmp / "models" / f"bench{img_size}", model, meta)
    out = tmp / f"eval{img_size}"
    argv = ["--model", str(ckpt), "--data", str(data), "--split", args.split, "--batch_size",
            str(args.batch_size), "--mixed_precision", str(bool(args.mixed_precision)), "--out", str(out)] + \
        ([] if args.num_workers is None else ["--num_workers", str(args.num_workers)]) + \
        ([] if args.report_images is None else ["--report_images", str(args.report_images)])
    ev = eval_script()
    eargs = ev.parse_args(argv)
    model, meta, _ = ev.get_model(eargs, device)
    _, df = ev.get_eval_data(meta, eargs, ckpt)
    n = len(df)
    if args.report_images is None:
        eargs.report_images = max(1, round(eval_report.REPORT_IMAGES * n / args.project))
        argv += ["--report_images", str(eargs.report_images)]
    x = torch.rand(args.batch_size, 3, *frame, device=device)
    if dev.use_channels_last(device):
        x = x.contiguous(memory_format=torch.channels_last)
    n_batches = -(-n // args.batch_size)
    workers = decode_workers(device) if eargs.num_workers is None else eargs.num_workers

    def bare():
        with torch.inference_mode(), dev.autocast_context(device, eargs.mixed_precision):
            for _ in range(n_batches):
                model(x)

    def predict():
        loader = eval_loader(df, meta, eargs.batch_size, workers)
        for _ in inference.predict(model, loader, device, False, eargs.mixed_precision):
            pass

    def evaluate():
        folder = tmp / "evaluate"
        folder.mkdir(exist_ok=True)
        ev.evaluate(model, meta, df, eargs, device, folder)

    rows = [("bare forward", best_of(bare, args.repeats), n_batches * args.batch_size),
            ("predict", best_of(predict, args.repeats), n),
            ("evaluate", best_of(evaluate, args.repeats), n),
            ("eval.py", best_of(lambda: ev.main(argv), args.repeats), n)]
    precision = dev.precision_name(device, eargs.mixed_precision)
    return rows, frame, n, precision, next(out.iterdir()), eargs.report_images, workers


def main():
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    args = parse_args()
    dev.set_threads()
    device = dev.get_device()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("WANDB_DIR", str(tmp))
        data = Path(args.data) if args.data else make_data(tmp, args.n, args.size)
        for img_size in (int(v) for v in args.img_sizes.split(",")):
            rows, frame, n, precision, folder, k, workers = bench_size(args, data, tmp, device, img_size)
            decode = f"{workers} decode workers" if workers else "decoding on threads"
            print(f"\n{args.arch} img {frame[0]}x{frame[1]}, batch {args.batch_size}, {precision}, "
                  f"{torch.get_num_threads()} threads, {decode}, {device}; {n} {args.split} "
                  f"images of {data.name} ({args.size if not args.data else 'given'}), masks at their own resolution")
            print(f"{'stage':<14}{'images':>8}{'seconds':>10}{'images/s':>10}{'ratio':>8}")
            base = rows[0][2] / rows[0][1]
            for name, secs, imgs in rows:
                print(f"{name:<14}{imgs:>8}{secs:>10.2f}{imgs / secs:>10.1f}{imgs / secs / base:>8.2f}")
            report_size(folder, n, k, eval_report.REPORT_IMAGES, args.project)


if __name__ == "__main__":
    main()
