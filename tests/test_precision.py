"""The precision rule (native bf16 only, fp16 + GradScaler otherwise), the fp16 + GradScaler + fused AdamW training
path run for real on the CPU, the non-finite-loss stop (per step on the CPU, deferred on an accelerator), and no
host-syncing op in our per-step code (recorded on the CPU at the dispatcher: what would sync on a GPU)."""
import pytest
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.learner import Learner

from torch.utils._python_dispatch import TorchDispatchMode

import train
from bddseg import device as dev
from bddseg.loaders import Augment, TensorLoader
from bddseg.metrics import count_values
from bddseg.precision import AutocastMixedPrecision, NonFiniteLoss, StopOnNonFinite


# ------------------------------------------------------------------ the rule
@pytest.mark.parametrize("native,expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_rule_uses_the_native_bf16_check(monkeypatch, native, expected):
    calls = []

    def is_bf16_supported(including_emulation=True):
        calls.append(including_emulation)
        return native or including_emulation  # a T4/V100: bf16 only by emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert dev.amp_dtype("cuda") == expected
    assert calls == [False]  # asked for native support only
    assert dev.precision_name("cuda") == {torch.bfloat16: "bf16", torch.float16: "fp16"}[expected]
    assert dev.amp_dtype("cuda", enabled=False) is None


# ------------------------------------------------------------------ fp16 + GradScaler + fused AdamW, for real
class Probe(Callback):
    """Records, per training step, the GradScaler's state and whether fastai's MixedPrecision let the step happen."""
    order = 100

    def before_fit(self):
        self.steps, self.losses, self.scales = 0, [], []

    def after_step(self):
        self.steps += 1
        self.scales.append(self.learn.scaler.get_scale())
        self.enabled = self.learn.scaler.is_enabled()

    def after_batch(self):
        if self.training:
            self.losses.append(float(self.learn.loss.detach()))


def test_fp16_gradscaler_fused_adamw_trains_on_cpu(tiny_dataset):
    config = train.parse_args(["--pretrained=False", "--img_size=32", "--batch_size=4", "--seed=0", "--epochs=2",
                               "--lr=1e-3", "--mixed_precision=False", "--augment=False"])
    dls = train.get_data(config, tiny_dataset, "cpu")
    learn, _, _ = train.get_learner(config, dls, "cpu")  # fp32 learner; fp16 added as on a GPU without bf16
    learn.add_cb(AutocastMixedPrecision("cpu", torch.float16))
    probe = Probe()
    learn.add_cb(probe)
    before = [p.detach().clone() for p in learn.model.parameters()]
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)  # fp16 is emulated on this CPU (slow): two steps
    assert probe.enabled  # a real GradScaler: fp16 gradients are scaled
    assert probe.steps == len(dls.train) == 2 and len(probe.scales) == probe.steps  # every step taken, none skipped
    assert probe.scales[0] == 2.0 ** 16  # the loss was multiplied by the initial scale, grads unscaled before step
    assert all(torch.isfinite(torch.tensor(probe.losses)))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, learn.model.parameters()))
    opt = learn.opt.opt  # fastai's OptimWrapper around torch's AdamW
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    assert all(len(s) and s["step"] == probe.steps for s in opt.state.values())  # the fused kernel did every step


def test_fp16_autocast_really_computes_in_half_on_cpu():
    seen = []
    model = torch.nn.Conv2d(3, 4, 3)
    model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.float16):
        model(torch.rand(1, 3, 8, 8))
    assert seen == [torch.float16]


# ------------------------------------------------------------------ non-finite loss
def nan_at(batch):
    """A loss that becomes nan at training batch `batch` (0-based, counted over the whole fit)."""
    count = [0]

    def loss(pred, y):
        value = F.mse_loss(pred.mean((1, 2, 3)), y.float().mean((1, 2)))
        count[0] += pred.requires_grad
        return value * float("nan") if pred.requires_grad and count[0] == batch + 1 else value
    return loss


class Count(Callback):
    def before_fit(self):
        self.n = 0

    def after_batch(self):
        self.n += self.training


def fit_until_stopped(stop, bad_batch, n=40, bs=4):
    """(error, training batches completed) of a tiny fit whose loss is nan at `bad_batch`."""
    images = torch.randint(0, 255, (n, 3, 4, 4), dtype=torch.uint8)
    masks = torch.randint(0, 3, (n, 4, 4), dtype=torch.uint8)
    dls = DataLoaders(TensorLoader(images, masks, bs, shuffle=True), TensorLoader(images[:4], masks[:4], bs))
    count = Count()
    learn = Learner(dls, torch.nn.Conv2d(3, 1, 1), loss_func=nan_at(bad_batch), cbs=[stop, count])
    with learn.no_bar(), learn.no_logging(), pytest.raises(NonFiniteLoss) as e:
        learn.fit(3, 1e-3)
    return e.value.message, count.n


def test_non_finite_loss_stops_before_backward_on_cpu():
    message, done = fit_until_stopped(StopOnNonFinite(), bad_batch=3)
    assert done == 3  # batches 0-2 completed; batch 3 raised before its backward pass
    assert "non-finite training loss (nan) at epoch 1, batch 4 " in message


def test_deferred_check_names_the_first_bad_batch():
    """As on a GPU: the flag is read every 4 steps, the error still names the first bad batch."""
    message, done = fit_until_stopped(StopOnNonFinite(every=4), bad_batch=5)
    assert done == 7  # read after the 8th batch's loss: batches 0-6 completed
    assert "non-finite training loss (nan) at epoch 1, batch 6 " in message
    message, done = fit_until_stopped(StopOnNonFinite(every=50), bad_batch=12)  # 10 batches/epoch: epoch 2
    assert done == 20  # no periodic read before the end of epoch 2's training phase
    assert "at epoch 2, batch 3 " in message


# ------------------------------------------------------------------ no host sync per step
class SyncingOps(TorchDispatchMode):
    """Records the ops that make a GPU wait for the host: reading a value back, data-dependent output sizes."""
    SYNCING = {"_local_scalar_dense", "nonzero", "unique", "_unique2", "masked_select", "bincount", "equal"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        bool_index = name in ("index", "index_put_") and any(
            isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in (args[1] if len(args) > 1 else []) or [])
        if name in self.SYNCING or bool_index:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self.seen = []
        return super().__enter__()


def test_per_step_code_has_no_host_syncing_op():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (8, 3, 24, 40), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, 7, (8, 24, 40), dtype=torch.uint8, generator=g)
    loader = TensorLoader(images, masks, 4, shuffle=True, augment=Augment(focus=0.5), out_size=(12, 20))
    stop = StopOnNonFinite(every=50)
    stop.before_train()
    stop.iter = 0
    with SyncingOps() as ops:
        for x, y in loader:  # batch cut, flip/zoom/crop, focus crops on rare pixels, brightness/contrast
            cells = count_values((y * 7 + y).reshape(-1), 50, fixed=True)  # the GPU path of the confusion count
            stop.record(torch.tensor(float("nan")))  # the deferred non-finite check
    assert ops.seen == []
    assert cells.sum() == y.numel() and int(stop.first[0]) == 0  # the work was done (read back after the mode)
    with SyncingOps() as ops:  # the recorder does see them
        x.sum().item(), torch.bincount(y.reshape(-1)), y[y > 0]
    assert set(ops.seen) >= {"_local_scalar_dense", "bincount"}


@pytest.mark.parametrize("flags,native", [("fpu sse2 avx2 fma", False),
                                          ("avx2 avx512f avx512bw avx512vl avx512dq", False),  # Skylake-SP: emulated
                                          ("avx512f avx512bw avx512_bf16", True), ("avx2 amx_bf16 amx_tile", True),
                                          ("fp asimd sve bf16 i8mm", True)])
def test_cpu_has_bf16_reads_the_cpu_flags_not_onednn(monkeypatch, flags, native):
    """oneDNN says yes on any AVX-512 CPU (it emulates bf16 there, slower than fp32): the flags decide."""
    import builtins
    import io
    real_open = builtins.open
    cpuinfo = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n"
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: io.StringIO(cpuinfo) if str(f) == "/proc/cpuinfo"
                        else real_open(f, *a, **k))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: "avx512f" in flags)
    dev.cpu_has_bf16.cache_clear()  # read once per process: read again under the fake file
    try:
        assert dev.cpu_has_bf16() is native
    finally:
        dev.cpu_has_bf16.cache_clear()


def test_cpu_has_bf16_asks_onednn_without_proc_cpuinfo(monkeypatch):
    import builtins
    real_open = builtins.open

    def no_cpuinfo(f, *a, **k):
        if str(f) == "/proc/cpuinfo":
            raise FileNotFoundError(f)
        return real_open(f, *a, **k)
    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    try:
        for answer in (True, False):
            monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: answer)
            dev.cpu_has_bf16.cache_clear()
            assert dev.cpu_has_bf16() is answer
    finally:
        dev.cpu_has_bf16.cache_clear()
