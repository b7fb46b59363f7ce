"""Quality at an equal CPU budget: a train.py recipe vs the course-way baseline, per-class IoU side by side.

    python bench/quality.py --data artifacts/camvid_ho --test artifacts/camvid_ho --split test   # README "Recipes"
    python bench/quality.py --data artifacts/camvid --test-images camvid/test --test-masks camvid/testannot \
        --mapping camvid-sign                                  # 21 min each (the recipe's budget), then both scored
    python bench/quality.py --data artifacts/bdd_simple_1k_split --test artifacts/bdd_simple_1k_split --budget 5
    python bench/quality.py ... --arms recipe --train-args "--crop auto"     # an A/B of one recipe setting

Each arm trains on --data (train stage to fit, valid stage to choose the best epoch by miou) for the same wall-clock
budget, on the same machine, one after the other:
- recipe: `train.py --recipe NAME --time_budget B` (the project's U-Net, bf16 where the CPU has it, the recipe's
  loss, size and crops), scored by `eval.py` on the test images;
- recipe-fp32: the same with `--mixed_precision False` (bf16 off: how a CPU without bf16 fares); run by default
  on a CPU with native bf16, where `recipe` is the bf16 row;
- course way: bench/course_way.py (fastai unet_learner resnet18 from scratch, fp32, 96 px, plain CE, one-cycle at
  2e-3 fitted to the same clock), scored here with the same metric code (fastai's class probabilities upsampled
  to each mask's size; eval.py upsamples logits).
The CPU model and whether it has native bf16 head the output (figures hold for that CPU only).
Test images: an image folder + mask folder + class mapping (imported by data/prepare.py), or a processed dataset
folder and its --split. Figures go to stdout and bench/out/quality.json; each recipe arm's run folder (checkpoint
and records) to bench/out/checkpoints/ARM, where bench/class_bias.py can read it.
"""
import argparse
import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bddseg import config
from bddseg import device as dev
from bddseg.cli import UserError
from bddseg.layout import read_split
from bddseg.loaders import check_dataset
from bddseg.metrics import CLASS_KEYS, confusion, iou_from_confusion, seg_metrics
from bddseg.record import BestCheckpoint
from bddseg.schedule import TimeBudget
from course_way import BATCH_SIZE, IMG_SIZE, LR, course_dls, course_learner

ROOT = Path(__file__).resolve().parents[1]

# what a recipe arm's train.py worked out or was given, recorded beside the recipe's values
PICKED = ["img_size_picked", "aspect_picked", "size_probe_step_s", "size_probe_frame", "crop_picked", "frame_size",
          "decoder_width", "ema_decay", "max_zoom", "color_jitter"]
MAX_EPOCHS = 10_000  # the clock ends the course-way fit, as train.py's --time_budget does


def parse_args(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="processed dataset folder to train on (train + valid stages)")
    p.add_argument("--test", help="processed dataset folder holding the test images (with --split)")
    p.add_argument("--split", default="test", help="stage of --test to score (default test)")
    p.add_argument("--test-images", help="folder of test images (instead of --test)")
    p.add_argument("--test-masks", help="folder of their masks")
    p.add_argument("--mapping", default="identity", help="class mapping of --test-masks (a prepare.py preset or JSON)")
    p.add_argument("--recipe", default="person", choices=list(config.RECIPES), help="train.py recipe")
    p.add_argument("--train-args", default="", help="more train.py flags for the recipe arms (e.g. '--crop auto': "
                   "an A/B against the recipe as it is)")
    p.add_argument("--budget", type=float, help="training minutes per arm (default: the recipe's time_budget)")
    p.add_argument("--arms", nargs="+", choices=["recipe", "recipe-fp32", "course"],
                   help="default: recipe and course; on a CPU with native bf16 also recipe-fp32 (bf16 off, which "
                        "stands in for a CPU without it)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=str(ROOT / "bench/out"))
    args = p.parse_args(argv)
    if bool(args.test) == bool(args.test_images) or bool(args.test_images) != bool(args.test_masks):
        p.error("give the test images either as --test FOLDER or as --test-images DIR --test-masks DIR")
    try:  # before 20 minutes of training, not after: train.py's and eval.py's own check
        for folder in filter(None, [args.data, args.test]):
            check_dataset(folder)
    except UserError as e:
        p.error(str(e))
    args.budget = args.budget or config.RECIPES[args.recipe].get("time_budget") or 21
    args.arms = args.arms or ["recipe", *(["recipe-fp32"] if dev.cpu_has_bf16() else []), "course"]
    return args


def run(cmd, tmp, **kw):
    """A project script in a subprocess, W&B offline into tmp; stops the bench when it fails."""
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_METRICS_FILE"}
    env.update(WANDB_MODE=os.environ.get("WANDB_MODE", "offline"), WANDB_DIR=str(tmp), WANDB_SILENT="true")
    print("$", " ".join(map(str, cmd)), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, *map(str, cmd)], check=True, cwd=ROOT, env=env, **kw)


def get_test(args, tmp) -> tuple:
    """(processed folder, stage) of the test images: --test as given, or --test-images imported into tmp."""
    if args.test:
        return Path(args.test), args.split
    run([ROOT / "data/prepare.py", "--source", "folder", "--images", args.test_images, "--masks", args.test_masks,
         "--mapping", args.mapping, "--stages", "test", "--out", tmp, "--name", "test_raw", "--split-name", "test",
         "--no-wandb"], tmp, stdout=subprocess.DEVNULL)
    return tmp / "test", "test"


def recipe_arm(args, test, split, tmp, fp32=False) -> dict:
    """Train the recipe with train.py (fp32: bf16 off), score its best checkpoint with eval.py."""
    t0, out = time.time(), tmp / ("recipe-fp32" if fp32 else "recipe")
    run([ROOT / "train.py", "--recipe", args.recipe, "--data", args.data, "--time_budget", args.budget,
         "--seed", args.seed, "--output", out / "models", *(["--mixed_precision", "False"] if fp32 else []),
         *shlex.split(args.train_args)],
        tmp, stdout=subprocess.DEVNULL)
    seconds = time.time() - t0
    run_dir = next((out / "models").glob("*/*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    run([ROOT / "eval.py", "--model", run_dir, "--data", test, "--split", split, "--out", out / "eval"], tmp,
        stdout=subprocess.DEVNULL)
    metrics = json.loads(next((out / "eval").glob("*/metrics.json")).read_text())
    keep = Path(args.out) / "checkpoints" / out.name  # outlives the temp dir (for bench/class_bias.py)
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(run_dir, keep)
    run_config = json.loads((run_dir / "config.json").read_text())
    epochs = len((run_dir / "metrics.jsonl").read_text().splitlines())
    return {"name": f"{args.recipe}-{run_config['precision']}", "seconds": round(seconds), "epochs": epochs,
            "best_epoch": summary["best_epoch"], "valid_miou": summary["best_metrics"]["miou"],
            "checkpoint": str(keep),
            "train_args": args.train_args,
            "config": {k: run_config[k] for k in [*config.RECIPES[args.recipe], *PICKED] if k in run_config},
            "test": {k: metrics[f"{split}_{k}"] for k in ["miou", *(f"{c}_iou" for c in CLASS_KEYS), "pixel_acc"]}}


def course_arm(args, test, split) -> dict:
    """Train the course way on the same clock (best epoch by valid miou kept in memory) and score it."""
    torch.manual_seed(args.seed)
    dev.set_threads()
    dls = course_dls(args.data, config.frame_size(IMG_SIZE), BATCH_SIZE)
    best = {}
    keep = BestCheckpoint(lambda model, m, epoch: best.update(state=copy.deepcopy(model.state_dict())))
    learn = course_learner(dls, metrics=seg_metrics())
    t0 = time.time()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(MAX_EPOCHS, LR, cbs=[TimeBudget(args.budget * 60), keep])
    seconds = time.time() - t0
    learn.model.load_state_dict(best["state"])
    return {"name": "course-fp32", "seconds": round(seconds), "epochs": learn.epoch + 1, "best_epoch": keep.best_epoch,
            "valid_miou": keep.best, "test": score_course(learn, test, split)}


def score_course(learn, test, split) -> dict:
    """A fastai learner's metrics on a split: its own test_dl transforms, probabilities upsampled to mask size."""
    df = read_split(test, split)
    with learn.no_bar():
        probs, _ = learn.get_preds(dl=learn.dls.test_dl(list(df.image)))
    cm = 0
    for p, label in zip(probs, df.label):
        mask = torch.from_numpy(np.asarray(Image.open(label)).copy())
        up = F.interpolate(p[None].float(), size=tuple(mask.shape), mode="bilinear", align_corners=False)
        cm = cm + confusion(up.argmax(1)[0], mask)
    return iou_from_confusion(cm)


def cell(v) -> str:
    """A table cell: floats to 4 decimals, nan/None (JSON null) as nan, anything else as is."""
    if v is None or isinstance(v, float):
        return f"{float('nan') if v is None else v:16.4f}"
    return f"{v!s:>16}"


def print_table(results, images, split):
    """Per-class IoU, one column per arm, then miou, pixel accuracy, valid miou, time and epochs."""
    print(f"\n{images} test images ({split}); IoU per class (nan: class in neither truth nor prediction)")
    print(f"{'':>15}" + "".join(f"{r['name']:>16}" for r in results))
    for key, label in [(f"{c}_iou", c) for c in CLASS_KEYS] + [("miou", "mIoU"), ("pixel_acc", "pixel acc")]:
        print(f"{label:>15}" + "".join(cell(r["test"][key]) for r in results))
    for key, label in [("valid_miou", "valid mIoU"), ("seconds", "seconds"), ("epochs", "epochs"),
                       ("best_epoch", "best epoch")]:
        print(f"{label:>15}" + "".join(cell(r[key]) for r in results))


def main(argv=None):
    args = parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        test, split = get_test(args, tmp)
        images = len(read_split(test, split))
        if not images:
            sys.exit(f"error: {test}: no images in stage {split!r}")
        print(f"budget {args.budget:g} min per arm; training data {args.data}; test {test} ({split}, {images} images)",
              file=sys.stderr)
        print(f"CPU: {dev.cpu_model()}, native bf16: {dev.cpu_has_bf16()}; arms: {', '.join(args.arms)}",
              file=sys.stderr)
        for arm in args.arms:
            results.append(course_arm(args, test, split) if arm == "course" else
                           recipe_arm(args, test, split, tmp, fp32=arm == "recipe-fp32"))
            print(f"done: {results[-1]['name']}: test miou {results[-1]['test']['miou']:.4f}, "
                  f"person {results[-1]['test']['person_iou']:.4f}", file=sys.stderr, flush=True)
    print(f"\nCPU: {dev.cpu_model()}, native bf16: {dev.cpu_has_bf16()}, {os.cpu_count()} CPUs")
    print_table(results, images, split)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps({"budget_min": args.budget, "data": str(args.data),
                                                  "cpu": dev.cpu_model(),
                                                  "cpu_bf16": dev.cpu_has_bf16(),
                                                  "test_images": images, "results": results}, indent=2) + "\n")
    print(f"\nwritten: {out / 'quality.json'}")


if __name__ == "__main__":
    main()
