"""A stand-in for train.py in sweep tests: writes one metric line per epoch to $SWEEP_METRICS_FILE, quickly.

miou = x + 0.01 * epoch (so a low x is a clearly bad trial). --mode crash raises after the first epoch,
--mode nometric finishes without metric lines. With --marker_dir it writes pid-<pid> at start and
terminated-<pid> when it receives SIGTERM (how the agent stops a pruned trial). It prints its W&B variables,
CUDA_VISIBLE_DEVICES and OMP_NUM_THREADS (what a GPU or CPU worker gives it).
"""
import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--x", type=float, default=0.5)
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--sleep", type=float, default=0.02)
p.add_argument("--mode", default="ok")
p.add_argument("--marker_dir", default=None)
p.add_argument("--run_dir", default=None)
args, unknown = p.parse_known_args()
print("fake_train argv:", sys.argv[1:], flush=True)
ENV = ("WANDB_PROJECT", "WANDB_RUN_GROUP", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
print("fake_train env:", " ".join(f"{k}={os.environ.get(k)}" for k in ENV), flush=True)

marker = Path(args.marker_dir) if args.marker_dir else None
if marker:
    marker.mkdir(parents=True, exist_ok=True)
    (marker / f"pid-{os.getpid()}").write_text(json.dumps(sys.argv[1:]))


def on_term(signum, frame):
    if marker:
        (marker / f"terminated-{os.getpid()}").write_text("SIGTERM")
    sys.exit(143)


signal.signal(signal.SIGTERM, on_term)
out = os.environ.get("SWEEP_METRICS_FILE")
for epoch in range(args.epochs):
    time.sleep(args.sleep)
    if args.mode == "crash" and epoch == 1:
        print("Traceback (most recent call last):\nRuntimeError: fake crash in epoch 1", file=sys.stderr)
        sys.exit(1)
    line = {"epoch": epoch, "train_loss": 1.0 / (epoch + 1)}
    if args.mode != "nometric":
        line["miou"] = args.x + 0.01 * epoch
    if args.run_dir:
        line["run_dir"] = args.run_dir
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")
    print(json.dumps(line), flush=True)
print("fake_train done", flush=True)
