"""Training-schedule callbacks: unfreeze the encoder after k epochs, fit one-cycle to a wall-clock budget."""
import time

from fastai.callback.core import Callback, CancelFitException, CancelTrainException
from fastai.callback.schedule import ParamScheduler


class UnfreezeAt(Callback):
    """Unfreeze every parameter group at the start of epoch `epoch` (0-based), keeping optimizer state."""

    def __init__(self, epoch):
        self.at = epoch

    def before_epoch(self):
        if self.epoch == self.at and self.opt.frozen_idx:
            self.opt.freeze_to(0)  # not learn.unfreeze(): that would also clear the optimizer state
            print(f"epoch {self.epoch + 1}: encoder unfrozen")


class TimeBudget(Callback):
    """Drive the schedule by wall-clock: progress = elapsed / budget; when spent, validate once more and stop.

    The budget covers fitting (training and validation passes); time for the last validation pass is reserved:
    the previous pass's duration, or before the first one a guess (a forward pass costs about a third of a step).
    Use with a large n_epoch: the epoch count no longer decides the end.
    """
    order = ParamScheduler.order - 1  # set pct_train before the scheduler reads it

    def __init__(self, seconds):
        self.seconds = float(seconds)

    def before_fit(self):
        self.t0, self.valid_time, self.steps, self.spent = time.perf_counter(), None, 0, False

    def progress(self) -> float:
        """Fraction of the training budget used so far."""
        elapsed = time.perf_counter() - self.t0
        valid = self.valid_time
        if valid is None:  # no validation pass yet: len(valid) batches at a third of the mean step time so far
            valid = len(self.dls.valid) * elapsed / max(self.steps, 1) / 3
        return elapsed / max(self.seconds - valid, 1e-9)

    def before_batch(self):
        if not self.training:
            return
        pct = self.progress()
        if pct >= 1:
            self.spent = True
            raise CancelTrainException()
        self.learn.pct_train = pct
        self.steps += 1  # steps started; progress() divides the time by the steps done before the current one

    def after_cancel_train(self):
        self.learn.recorder.cancel_train = False  # keep the partial epoch's train loss (log columns stay aligned)

    def before_validate(self):
        self.tv = time.perf_counter()

    def after_validate(self):
        self.valid_time = time.perf_counter() - self.tv

    def after_epoch(self):
        if self.spent or self.progress() >= 1:
            raise CancelFitException()


class AnnealClassWeights(Callback):
    """Class weights of the loss go from their start values w0 to 1 (geometrically, w0 ** (1 - pct_train)).

    Early steps give the rare classes gradient; late steps train with plain weights, so that background is not
    over-painted with rare classes at the end. Follows pct_train (the clock under TimeBudget). In place, on the
    loss's device: no host sync.
    """
    order = TimeBudget.order + 1  # after TimeBudget set pct_train

    def before_fit(self):
        self.targets = [m.weight for m in self.learn.loss_func.modules() if getattr(m, "weight", None) is not None]
        self.start = [w.detach().clone() for w in self.targets]

    def before_batch(self):
        if self.training:
            for w, w0 in zip(self.targets, self.start):
                w.copy_(w0.pow(1 - self.learn.pct_train))

    def after_fit(self):
        for w in self.targets:
            w.fill_(1.0)
