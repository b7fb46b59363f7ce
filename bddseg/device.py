"""Where and in which precision to run: device choice, CPU threads, the autocast rule (fastai callback: precision.py).

The rule (train and eval share it): CUDA -> bf16 autocast when the GPU runs bf16 natively (Ampere and later), else
fp16 with a GradScaler (T4, V100: torch would otherwise emulate bf16, slowly); CPU -> bf16 autocast when the CPU has
native bf16 (AVX512-BF16/AMX), else fp32.
"""
from contextlib import nullcontext
from functools import lru_cache

import torch

from bddseg import config


def get_device(name=None) -> torch.device:
    """torch device: `name` if given, else CUDA when available, else CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def set_threads(n=None) -> int:
    """Use one intra-op thread per CPU this process may run on (cgroup/affinity aware); returns the count."""
    n = n or config.cores()
    torch.set_num_threads(n)
    return n


def cpuinfo() -> str:
    """The text of /proc/cpuinfo, or '' where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when this CPU runs bf16 matmuls/convolutions natively: /proc/cpuinfo's avx512_bf16 or amx_bf16 (x86) or
    bf16 (Arm) flag; oneDNN's own check only where that file is missing. oneDNN alone also says yes on AVX-512 CPUs
    without bf16 instructions (Skylake-SP and later), where it emulates bf16 at about half the fp32 speed
    (uxlfoundation/oneDNN#493)."""
    info = cpuinfo()
    if not info:
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except Exception:
            return False
    return bool(set(info.split()) & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (as lscpu shows it): bench figures say which CPU they came from."""
    return next((line.split(":", 1)[1].strip() for line in cpuinfo().splitlines() if line.startswith("model name")),
                "unknown CPU")


def cuda_has_bf16() -> bool:
    """True when the current GPU runs bf16 natively (emulated bf16 on pre-Ampere GPUs does not count)."""
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def amp_dtype(device, enabled=True):
    """The autocast dtype the rule picks for `device`, or None for full fp32."""
    device = torch.device(device)
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_bf16() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_bf16() else None
    return None


def autocast_context(device, enabled=True):
    """Context manager for inference/forward passes under the project's mixed-precision rule."""
    device = torch.device(device)
    dtype = amp_dtype(device, enabled)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def precision_name(device, enabled=True) -> str:
    """'bf16', 'fp16' or 'fp32': what `autocast_context` will do on `device` (for logs and configs)."""
    dtype = amp_dtype(device, enabled)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def use_channels_last(device) -> bool:
    """channels_last (model AND input) on CUDA and CPU: the project's resnet18 U-Net trains 10-20% faster with it on
    this 2-core CPU (bf16 and fp32, 96 and 180 px); a contiguous input to a channels_last model gains nothing."""
    return torch.device(device).type in ("cuda", "cpu")
