"""data/prepare.py throughput: images/s of the import code as committed (BEFORE) versus this working tree, side by side.

    python bench/import_speed.py                     # 1,000 frames of 1280x720 in a real BDD100K layout + 60 synthetic
    python bench/import_speed.py --n 200 --synthetic 0 --workers 2

Two sources, both 1280x720: a BDD100K 10k tree (images/10k/{train,val} JPEGs, labels/sem_seg/masks/{train,val}
train-id PNGs) made from `--unique` synthetic frames repeated under distinct names, and the synthetic source itself
(whose cost is the scene generator's). Each row runs the whole command in a subprocess (--no-wandb), the committed
code from a `git archive` in a temp folder, alternating old/new `--repeats` times; the best time is kept.
"""
import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bddseg import config, synthetic

BEFORE = "ed632ef"  # the import code before this change (HEAD when it was written)
# our class id -> a BDD100K train id that maps back to it (background: building)
TRAIN_ID = {0: 2, 1: 0, 2: 6, 3: 7, 4: 11, 5: 13, 6: 18, config.IGNORE: 255}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="frames in the BDD100K tree")
    p.add_argument("--unique", type=int, default=40, help="distinct synthetic frames the tree repeats")
    p.add_argument("--synthetic", type=int, default=60, help="frames of the synthetic source (0 = skip)")
    p.add_argument("--size", default="1280x720")
    p.add_argument("--workers", type=int, default=None, help="--workers for both (default: each one's own default)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--before", default=BEFORE, help="commit of the baseline import code")
    return p.parse_args()


def encoded_frame(i, size) -> tuple:
    """(JPEG bytes, train-id mask PNG bytes) of synthetic frame i."""
    _, rgb, mask = synthetic.generate(i, seed=7, size=size)
    lut = np.zeros(256, np.uint8)
    for c, t in TRAIN_ID.items():
        lut[c] = t
    jpg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(rgb).save(jpg, "JPEG", quality=90)
    Image.fromarray(lut[mask], "L").save(png, "PNG")
    return jpg.getvalue(), png.getvalue()


def make_bdd_tree(root, n, unique, size):
    """A BDD100K 10k layout of n frames (7/8 train, 1/8 val) repeating `unique` distinct frames."""
    frames = [encoded_frame(i, size) for i in range(unique)]
    for i in range(n):
        split = "train" if i % 8 else "val"
        stem = f"{i // 5:08x}-{i:08x}"
        for sub, data in ((Path("images/10k") / split / f"{stem}.jpg", frames[i % unique][0]),
                          (Path("labels/sem_seg/masks") / split / f"{stem}.png", frames[i % unique][1])):
            (root / sub).parent.mkdir(parents=True, exist_ok=True)
            (root / sub).write_bytes(data)
    return root


def committed_code(tmp, commit):
    """bddseg/ and data/ as committed, unpacked into tmp/before."""
    dest = tmp / "before"
    dest.mkdir()
    subprocess.run(f"git archive {commit} bddseg data | tar -x -C {dest}", shell=True, cwd=config.ROOT, check=True)
    return dest


def run_prepare(code, out, args, workers):
    """Seconds of one whole data/prepare.py run of `code` (its bddseg first on the import path)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    extra = ["--workers", str(workers)] if workers else []
    Path(out).mkdir()
    t = time.perf_counter()
    subprocess.run([sys.executable, str(code / "data" / "prepare.py"), *args, "--out", "out", "--no-wandb", *extra],
                   check=True, env=env, stdout=subprocess.DEVNULL, cwd=out)  # one command line (SOURCE.md) for all
    return time.perf_counter() - t


def compare(tmp, code, label, args, n, opts):
    """Best-of times of the old and new code on one source; prints a row each and the ratio."""
    times = {"before": [], "now": []}
    for r in range(opts.repeats):
        for name, root in (("before", code), ("now", config.ROOT)):
            times[name].append(run_prepare(root, tmp / f"out_{label}_{name}_{r}", args, opts.workers))
    old, new = min(times["before"]), min(times["now"])
    print(f"{label:<11}{'before':<8}{n:>7}{old:>10.1f}{n / old:>10.1f}")
    print(f"{label:<11}{'now':<8}{n:>7}{new:>10.1f}{n / new:>10.1f}{old / new:>8.2f}x   {same_bytes(tmp, label)}")


def same_bytes(tmp, label) -> str:
    """Whether the first old and new runs wrote byte-identical files (manifests and SOURCE.md included)."""
    old, new = tmp / f"out_{label}_before_0" / "out", tmp / f"out_{label}_now_0" / "out"
    files = sorted(str(p.relative_to(old)) for p in old.rglob("*") if p.is_file())
    if files != sorted(str(p.relative_to(new)) for p in new.rglob("*") if p.is_file()):
        return "outputs DIFFER: other files"
    differ = [f for f in files if (old / f).read_bytes() != (new / f).read_bytes()]
    return f"outputs DIFFER: {differ[:3]}" if differ else f"outputs byte-identical ({len(files)} files)"


def main():
    opts = parse_args()
    w, h = (int(v) for v in opts.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        code = committed_code(tmp, opts.before)
        t = time.perf_counter()
        bdd = make_bdd_tree(tmp / "bdd", opts.n, opts.unique, (w, h))
        print(f"BDD100K tree: {opts.n} frames of {w}x{h} ({opts.unique} distinct) made in "
              f"{time.perf_counter() - t:.0f} s;"
              f" {os.cpu_count()} CPUs, baseline {opts.before}")
        print(f"{'source':<11}{'code':<8}{'images':>7}{'seconds':>10}{'images/s':>10}{'ratio':>9}")
        compare(tmp, code, "bdd100k", ["--source", "bdd100k", "--root", str(bdd)], opts.n, opts)
        if opts.synthetic:
            compare(tmp, code, "synthetic", ["--n", str(opts.synthetic), "--size", opts.size], opts.synthetic, opts)


if __name__ == "__main__":
    main()
