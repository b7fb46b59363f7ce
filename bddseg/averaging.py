"""Validate and checkpoint an exponential moving average (EMA) of the weights instead of the last step's weights.

Meant for small data at a high one-cycle lr, where validation swings from epoch to epoch and the best checkpoint
can come from a swing. The EMA (torch's `AveragedModel` with `get_ema_multi_avg_fn`, BatchNorm statistics
included) follows the weights over about the last 1/(1-decay) optimizer steps; the optimizer keeps training the
live weights. A two-seed CamVid A/B: lower validation mIoU, higher test mIoU (docs/results.md "Recipes"); a sweep
option.
"""
from fastai.callback.core import Callback
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class EMAWeights(Callback):
    """Update the EMA after every optimizer step; validation (and BestCheckpoint's save) sees the EMA model."""

    def __init__(self, decay):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay

    def before_fit(self):
        self.live = self.learn.model
        self.ema = AveragedModel(self.live, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)

    def after_step(self):
        self.ema.update_parameters(self.live)

    def before_validate(self):
        if self.ema.n_averaged > 0:  # not before the first step
            self.learn.model = self.ema.module.eval()  # TrainEvalCallback already put the live model in eval

    def before_train(self):
        self.learn.model = self.live.train()  # TrainEvalCallback (order -10) just set the mode of the EMA copy

    def after_fit(self):
        self.learn.model = self.live
