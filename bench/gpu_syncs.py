"""The GPU check's host-sync census: one epoch of train.py's fit with CUDA's sync debug mode on, every sync
attributed to the Python line that caused it, so a per-step sync in bddseg/ shows as a count near the step count.

    python bench/gpu_syncs.py DATA_DIR [IMG_SIZE] [BATCH_SIZE]

Known and not ours: fastai's Recorder (AvgSmoothLoss/AvgLoss copy the loss to the CPU every step), fastai's
MixedPrecision (reads the GradScaler scale every fp16 step), WandbCallback's per-step log.
"""
import collections
import sys
import warnings

import torch

import train
from bddseg import device as dev


def census(data, img_size, bs) -> tuple:
    """(training steps, Counter of (file, line) -> sync warnings) of one epoch of train.py's learner on CUDA."""
    config = train.parse_args([f"--img_size={img_size}", f"--batch_size={bs}", "--pretrained=False", "--seed=0"])
    device = dev.get_device()
    learn, _, _ = train.get_learner(config, train.get_data(config, data, device), device)
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)  # warm-up: cuDNN autotuning, allocator, lazy inits
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                learn.fit(1, 1e-3)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    where = collections.Counter((w.filename, w.lineno) for w in caught if "synchroniz" in str(w.message))
    return len(learn.dls.train), where


def main(data, img_size=180, bs=8):
    """Print the syncs per source line, ours (bddseg/) marked."""
    if not torch.cuda.is_available():
        print("sync census: skipped (CUDA's sync debug mode needs a GPU)")
        return
    steps, where = census(data, int(img_size), int(bs))
    print(f"sync census, one epoch ({steps} training steps + validation), most first:")
    for (file, line), n in where.most_common(15):
        mark = "OURS " if "/bddseg/" in file or file.endswith(("train.py", "eval.py")) else "     "
        print(f"  {mark}{n:5d}  {file}:{line}")


if __name__ == "__main__":
    main(*sys.argv[1:])
