"""Training-data memory: one preallocated uint8 tensor per split (peak growth per frame ~ its bytes, measured in a
child process), the early refusal of a dataset larger than memory, and where the splits live on CUDA."""
import json
import subprocess
import sys

import pytest
import torch

from bddseg import config, loaders
from bddseg.cli import UserError
from bddseg.loaders import check_memory, data_placement, frame_bytes, get_dls
from conftest import make_tiny_dataset

BIG = (360, 640)  # tiny files decoded up to this size: 0.92 MB per frame, so the data dominates the process's noise

PEAK = """
import json, resource, sys
import torch
from bddseg.loaders import load_split
load_split(sys.argv[1], "valid", (8, 8), threads=1)  # warm up imports, thread pool, PIL
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
images, masks, _ = load_split(sys.argv[1], "train", (int(sys.argv[2]), int(sys.argv[3])), threads=1)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": len(images), "peak_growth": (after - before) * 1024, "nbytes": images.nbytes + masks.nbytes}))
"""


def peak_growth(root):
    """(frames, peak RSS growth in bytes, tensor bytes) of load_split of the train stage at BIG, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", PEAK, str(root), *map(str, BIG)], capture_output=True, text=True,
                         check=True, cwd=config.ROOT).stdout
    r = json.loads(out.splitlines()[-1])
    return r["n"], r["peak_growth"], r["nbytes"]


def test_load_split_peak_grows_like_the_uint8_bytes(tmp_path):
    small = make_tiny_dataset(tmp_path / "small", n=10, videos=10)  # 8 train frames
    large = make_tiny_dataset(tmp_path / "large", n=40, videos=10)  # 32 train frames
    (n1, g1, b1), (n4, g4, b4) = peak_growth(small), peak_growth(large)
    per_frame = 4 * BIG[0] * BIG[1]  # uint8 image (3 x h x w) + mask (h x w)
    assert (n1, n4) == (8, 32) and frame_bytes(BIG) == per_frame
    assert (b1, b4) == (n1 * per_frame, n4 * per_frame)  # the tensors are exactly the uint8 bytes
    slope = (g4 - g1) / (n4 - n1)
    assert slope <= 1.3 * per_frame, f"peak grows {slope / per_frame:.2f}x the uint8 bytes per frame"


def test_a_dataset_larger_than_memory_fails_early_with_the_size_that_fits(tiny_dataset, monkeypatch):
    size = config.frame_size(180)  # (180, 320): 230,400 bytes per frame, 10 train + valid frames
    needed = 10 * 4 * 180 * 320
    available = int(needed / loaders.DATA_MEMORY_SHARE) - 1  # one byte short
    monkeypatch.setattr(loaders, "available_memory", lambda: available)
    decoded = []
    monkeypatch.setattr(loaders, "load_split", lambda *a, **k: decoded.append(a))
    with pytest.raises(UserError) as e:
        get_dls(tiny_dataset, size, bs=2)
    assert not decoded  # refused before decoding anything
    budget = available * loaders.DATA_MEMORY_SHARE
    fits = max(h for h in range(1, 180) if 10 * 4 * h * config.frame_size(h)[1] <= budget)
    assert fits == 179
    assert f"need {needed:,} bytes" in str(e.value) and f"largest img_size that fits is {fits}" in str(e.value)
    check_memory(10, size, available=available + 2)  # enough: no error
    with pytest.raises(UserError, match="largest img_size that fits is 0"):
        check_memory(10, size, available=10)


def test_available_memory_reads_meminfo():
    want = next(int(s.split()[1]) * 1024 for s in open("/proc/meminfo") if s.startswith("MemAvailable:"))
    assert abs(loaders.available_memory() - want) < 256 * 2**20  # read moments apart


@pytest.mark.parametrize("free,expected", [(4 * 2**30, "cuda"), (2 * 2**30, "cuda"), (2 * 2**30 - 2, "pinned")])
def test_cuda_keeps_the_splits_on_the_gpu_when_they_fit(monkeypatch, free, expected):
    asked = []

    def mem_get_info(device=None):
        asked.append(device)
        return free, 80 * 2**30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    assert data_placement(2**30, "cuda") == expected  # 1 GiB of data: fits when at most half the free memory
    assert asked == [torch.device("cuda")]
    assert data_placement(2**30, "cpu") == "cpu" and len(asked) == 1  # no GPU query for a CPU run
