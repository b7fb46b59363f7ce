"""The GPU check's throughput line: train.py's images/s (its metrics.jsonl) vs the bare training step on the same
device, precision (the project's rule), model, frame size and batch size.

    python bench/gpu_speed.py RUN_DIR       # RUN_DIR: a train.py run folder (config.json, metrics.jsonl)

The bare step is forward + loss + backward + fused AdamW (train.py's optimizer), with a GradScaler for fp16, on
tensors already on the device: no data, metrics, validation or logging. train.py's figure is its fastest epoch after
the first (training images over the whole epoch's wall time, validation and checkpoint included).
"""
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bddseg import config
from bddseg import device as dev
from bddseg.models import build_model


def sync(device):
    """Wait for the device's queued work (timing boundaries only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step(arch, size, bs, device, steps=20, warmup=5, windows=3) -> float:
    """Images/s of the bare training step on `device` under the precision rule; best of `windows` timed windows."""
    model, _ = build_model(arch, len(config.BDD_CLASSES), pretrained=False)
    fmt = torch.channels_last if dev.use_channels_last(device) else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, betas=(0.9, 0.99), eps=1e-5, fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=dev.amp_dtype(device) == torch.float16)
    x = torch.rand(bs, 3, *size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, len(config.BDD_CLASSES), (bs, *size), device=device)
    times = []
    for i in range(warmup + steps * windows):
        if i >= warmup and (i - warmup) % steps == 0:
            sync(device)
            times.append(time.perf_counter())
        with dev.autocast_context(device):
            loss = F.cross_entropy(model(x).float(), y, ignore_index=config.IGNORE)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    sync(device)
    times.append(time.perf_counter())
    return bs * steps / min(b - a for a, b in zip(times, times[1:]))


def train_py_speed(run_dir) -> tuple:
    """(images/s of the fastest epoch after the first, config dict) of a train.py run folder."""
    cfg = json.loads((run_dir / "config.json").read_text())
    rows = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:] or rows
    return cfg["n_train"] // cfg["batch_size"] * cfg["batch_size"] / min(r["time"] for r in timed), cfg


def main(run_dir):
    """Print train.py images/s, bare-step images/s and their ratio."""
    speed, cfg = train_py_speed(Path(run_dir))
    device, _ = dev.get_device(), dev.set_threads()  # threads as train.py sets them
    bare = bare_step(cfg["arch"], tuple(cfg["frame_size"]), cfg["batch_size"], device)
    print(f"throughput {cfg['arch']} {cfg['frame_size'][0]}x{cfg['frame_size'][1]} batch {cfg['batch_size']} "
          f"{device} {dev.precision_name(device)}: train.py {speed:.1f} img/s, bare step {bare:.1f} img/s, "
          f"train.py/bare {speed / bare:.0%}")


if __name__ == "__main__":
    main(sys.argv[1])
