"""Numerics of the training loop as fastai callbacks: autocast on any device (GradScaler for fp16), and a stop on
the first non-finite loss (the rule that picks the dtype is `bddseg.device.amp_dtype`).

Neither adds a per-step host sync on a GPU. fastai's own loop still has some that are not ours to change (see
bench/gpu_syncs.py): the Recorder's AvgSmoothLoss/AvgLoss copy the loss to the CPU every step (`to_detach`),
fastai's MixedPrecision reads the GradScaler's scale every fp16 step (`get_scale()`), WandbCallback logs every step.
"""
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.torch_core import L
from torch.amp import GradScaler

CHECK_EVERY = 50  # training steps between reads of the non-finite-loss flag on an accelerator


class AutocastMixedPrecision(MixedPrecision):
    """fastai's MixedPrecision for any device type: forward + loss under autocast, GradScaler only for fp16."""

    def __init__(self, device, dtype, **kwargs):
        super().__init__(**kwargs)
        self.device_type, self.dtype = torch.device(device).type, dtype

    def before_fit(self):
        self.kwargs["enabled"] = self.dtype == torch.float16
        self.autocast = torch.autocast(self.device_type, dtype=self.dtype)
        self.learn.scaler, self.scales = GradScaler(self.device_type, **self.kwargs), L()


class NonFiniteLoss(RuntimeError):
    """Training produced a nan/inf loss; `message` survives fastai's rewrapping of the exception's args."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class StopOnNonFinite(Callback):
    """Raise NonFiniteLoss as soon as a training loss is nan or inf, without a host sync per step on a GPU.

    CPU losses are checked every step, before the backward pass (reading a CPU tensor costs nothing). Elsewhere a
    device-side record of the first non-finite batch is kept, and read (one sync) every `every` steps and at the end
    of each epoch's training phase: the error then names the first bad batch, a few steps late.
    """
    order = MixedPrecision.order + 1  # after autocast has exited (raising inside it would leave it on), before backward

    def __init__(self, every=None):
        self.every = every  # None: 1 on the CPU, CHECK_EVERY on an accelerator

    def before_train(self):
        self.first = None  # (batch index, loss) of the epoch's first non-finite loss, as device tensors

    def after_loss(self):
        if not self.training:
            return
        loss = self.learn.loss_grad.detach().float()
        every = self.every or (1 if loss.device.type == "cpu" else CHECK_EVERY)
        if every == 1:
            if not torch.isfinite(loss).all():
                self.stop(self.iter, loss.sum().item())
            return
        self.record(loss)
        if (self.iter + 1) % every == 0:
            self.check()

    def record(self, loss):
        """Keep the first non-finite loss of the epoch and its batch index, on the loss's device (no sync)."""
        value = loss.sum()
        if self.first is None:
            self.first = (torch.full((), -1, dtype=torch.long, device=loss.device), torch.zeros((), device=loss.device))
        index, kept = self.first
        new = ~torch.isfinite(value) & (index < 0)
        self.first = (torch.where(new, self.iter, index), torch.where(new, value, kept))

    def check(self):
        """Read the device-side record (one host sync) and stop if a non-finite loss was seen."""
        if self.first is not None and int(self.first[0]) >= 0:
            self.stop(int(self.first[0]), float(self.first[1]))

    def after_train(self):
        self.check()

    def stop(self, batch, value):
        """Raise NonFiniteLoss naming the epoch, batch and learning rate."""
        lr = self.opt.hypers[-1].get("lr", float("nan")) if self.opt is not None else float("nan")
        raise NonFiniteLoss(f"non-finite training loss ({value:g}) at epoch {self.epoch + 1}, batch {batch + 1} "
                            f"(lr={lr:.3g}); the run is stopped. Try a lower --lr or --mixed_precision False")
