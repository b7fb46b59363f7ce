"""How the pipeline scales with the data: peak memory of training per added frame, and the whole chain at size.

    python bench/scale.py                          # N=50 / 4N=200 frames at img 180 and 360; chain on 400 frames
    python bench/scale.py --n 50 --chain 4000      # the chain at 4,000 synthetic 1280x720 frames (about 1 h here)
    python bench/scale.py --chain 0                # memory slope only

1. Memory: a 1-epoch `train.py` (no pretrained weights, W&B offline) on N and 4N synthetic 640x360 frames at each
   --img_sizes; peak RSS of the train.py process (`os.wait4`'s rusage of that child alone) and the slope
   (RSS(4N) - RSS(N)) / (frames loaded at 4N - frames loaded at N) next to the uint8 bytes of one frame
   (image 3 x h x w + mask h x w) at that size. Loaded = train + valid rows (train.py decodes both splits).
2. Chain: prepare -> 1 epoch at --chain_img -> eval on --chain synthetic 1280x720 frames; wall time and peak RSS
   of each step's main process, and each step projected to the full BDD100K 10k release (8,000 frames): wall time
   per frame x 8,000, RSS plus the measured slope x the added frames that step holds in memory.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bddseg import config, layout
from bddseg import device as dev

ROOT = config.ROOT
FULL_RELEASE = 8000  # BDD100K 10k sem-seg: 7,000 train + 1,000 val labelled frames
FRACTIONS = "0.8,0.1,0.1"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50, help="N of the memory runs (N and 4N frames)")
    p.add_argument("--img_sizes", default="180,360")
    p.add_argument("--chain", type=int, default=400, help="frames of the whole-chain run (0 = skip)")
    p.add_argument("--chain_img", type=int, default=180)
    p.add_argument("--batch_size", type=int, default=8)
    return p.parse_args()


def run(cmd, env=None) -> tuple:
    """(wall seconds, peak RSS bytes) of one child process; its output is kept only when it fails."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, *map(str, cmd)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            log.seek(0)
            sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{log.read().decode()[-3000:]}")
    return time.perf_counter() - t, usage.ru_maxrss * 1024


def prepare(out, n, size, name):
    """Synthetic frames through data/prepare.py into out/<name>; (seconds, peak RSS, dataset folder)."""
    secs, rss = run([ROOT / "data" / "prepare.py", "--n", n, "--size", size, "--out", out, "--no-wandb",
                     "--fractions", FRACTIONS, "--name", f"{name}_raw", "--split-name", name])
    return secs, rss, Path(out) / name


def train(data, img_size, tmp, batch_size):
    """One epoch of train.py on `data`; (seconds, peak RSS)."""
    return run([ROOT / "train.py", "--data", data, "--img_size", img_size, "--epochs", 1, "--freeze_epochs", 0,
                "--pretrained", False, "--batch_size", batch_size, "--output", Path(tmp) / "models"],
               env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp), "WANDB_SILENT": "true",
                    "BDDSEG_MODELS": str(Path(tmp) / "models")})


def evaluate(tmp, n_test):
    """eval.py of the latest run on its test split (report: the default --report_images); (seconds, peak RSS)."""
    return run([ROOT / "eval.py", "--latest", "--out", Path(tmp) / "eval"],
               env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp), "WANDB_SILENT": "true",
                    "BDDSEG_MODELS": str(Path(tmp) / "models")})


def loaded(data) -> int:
    """Frames train.py holds in memory: the train and valid rows of a processed folder."""
    return int(pd.read_csv(Path(data) / layout.SPLIT_CSV).Stage.isin(["train", "valid"]).sum())


def frame_bytes(img_size) -> int:
    """uint8 bytes of one frame at img_size: image 3 x h x w + mask h x w."""
    h, w = config.frame_size(img_size)
    return 4 * h * w


def memory_slopes(args, tmp) -> dict:
    """Print peak RSS of 1-epoch runs on N and 4N frames per img size and the slope; returns {img_size: slope}."""
    sets = {n: prepare(tmp / "mem", n, "640x360", f"mem{n}")[2] for n in (args.n, 4 * args.n)}
    print(f"\n1. train.py peak RSS, 1 epoch, batch {args.batch_size}, synthetic 640x360 frames")
    print(f"{'img':>5}{'frames':>8}{'loaded':>8}{'seconds':>9}{'peak RSS MB':>13}")
    slopes = {}
    for img in (int(v) for v in args.img_sizes.split(",")):
        rows = []
        for n, data in sets.items():
            secs, rss = train(data, img, tmp / f"train{img}_{n}", args.batch_size)
            rows.append((loaded(data), rss))
            print(f"{img:>5}{n:>8}{loaded(data):>8}{secs:>9.0f}{rss / 1e6:>13.0f}")
        (f0, r0), (f1, r1) = rows
        slopes[img] = (r1 - r0) / (f1 - f0)
        print(f"      slope {slopes[img] / 1e3:.0f} kB per added frame = {slopes[img] / frame_bytes(img):.2f}x the "
              f"{frame_bytes(img) / 1e3:.0f} kB of uint8 image + mask per frame at {config.frame_size(img)} "
              f"(goal <= 1.3x)")
    return slopes


def chain(args, tmp, slope):
    """Print wall time and peak RSS of prepare -> 1 epoch -> eval on --chain 1280x720 frames, and the projection."""
    n, img = args.chain, args.chain_img
    t_prep, r_prep, data = prepare(tmp / "chain", n, "1280x720", "chain")
    df = pd.read_csv(data / layout.SPLIT_CSV)
    n_load, n_test = loaded(data), int((df.Stage == "test").sum())
    t_train, r_train = train(data, img, tmp / "chain_run", args.batch_size)
    t_eval, r_eval = evaluate(tmp / "chain_run", n_test)
    scale = FULL_RELEASE / n
    grow = slope * (n_load * scale - n_load) if slope else 0
    print(f"\n2. whole chain on {n} synthetic 1280x720 frames (train+valid {n_load}, test {n_test}), img {img}; "
          f"projected to {FULL_RELEASE} frames (x{scale:.1f})")
    print(f"{'step':<10}{'seconds':>9}{'peak RSS MB':>13}{'proj. seconds':>15}{'proj. RSS MB':>14}")
    for step, secs, rss, extra in (("prepare", t_prep, r_prep, 0), ("train", t_train, r_train, grow),
                                   ("eval", t_eval, r_eval, 0)):
        print(f"{step:<10}{secs:>9.0f}{rss / 1e6:>13.0f}{secs * scale:>15.0f}{(rss + extra) / 1e6:>14.0f}")
    print("prepare and eval stream their frames (memory flat in the frame count); train's projection adds the "
          "measured slope per frame; times scale linearly with the frames.")


def main():
    args = parse_args()
    print(f"{os.cpu_count()} CPUs; {dev.cpu_model()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        slopes = memory_slopes(args, tmp) if args.n else {}
        if args.chain:
            chain(args, tmp, slopes.get(args.chain_img))


if __name__ == "__main__":
    main()
