"""Numerics of the training loop as fastai callbacks: autocast on any device (GradScaler for fp16), and a stop on
the first non-finite loss (the rule that picks the dtype is `bddseg.device.amp_dtype`)."""
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.torch_core import L
from torch.amp import GradScaler


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
    """Raise NonFiniteLoss (before the backward pass) as soon as a training loss is nan or inf."""
    order = MixedPrecision.order + 1  # after autocast has exited (raising inside it would leave it on), before backward

    def after_loss(self):
        if self.training and not torch.isfinite(self.learn.loss_grad.detach()).all():
            lr = self.opt.hypers[-1].get("lr", float("nan")) if self.opt is not None else float("nan")
            raise NonFiniteLoss(f"non-finite training loss ({self.learn.loss_grad.item():g}) at epoch "
                                f"{self.epoch + 1}, batch {self.iter + 1} (lr={lr:.3g}); the run is stopped. "
                                f"Try a lower --lr or --mixed_precision False")
