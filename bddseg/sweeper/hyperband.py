"""W&B's hyperband early termination as an Optuna pruner, counted in metric reports (not epochs or seconds).

Same rules as W&B's `sweeps.hyperband_stopping`: bands are report counts (from `min_iter` times powers of
`eta`, or `max_iter` divided by `eta` up to `s` times); at each band the threshold is the value that keeps the
best 1/eta of every trial that reached it; a running trial past a band is stopped when its best value so far
is worse than that band's threshold. `strict: true` compares the trial's value *at* the band instead of its
best so far (stops more runs, closer to the Hyperband paper).
"""
import math

from optuna.pruners import BasePruner


def bands(early_terminate: dict) -> list:
    """Report counts at which trials are judged, from a filled `early_terminate` config (W&B's arithmetic)."""
    eta = early_terminate.get("eta", 3)
    if "max_iter" in early_terminate:
        band, out = early_terminate["max_iter"], []
        for _ in range(int(early_terminate["s"])):
            band /= eta
            if band < 1:
                break
            out.append(int(band))
        out = sorted(out)
    elif "min_iter" in early_terminate:
        out = [int(early_terminate["min_iter"] * eta ** i) for i in range(100)]
    else:
        raise ValueError('either "max_iter" or "min_iter" must be specified')
    if not out:
        raise ValueError("Bands must be an array of length at least 1. Try increasing s, decreasing eta, "
                         "or increasing min_iter.")
    return out


def thresholds(histories: list, band_list: list, eta: float) -> list:
    """Per band: the value (lower is better) a trial must beat to stay in the top 1/eta of those that reached it."""
    out = []
    for band in band_list:
        values = sorted(h[band] for h in histories if len(h) > band)
        out.append(values[int((1.0 / eta) * len(values))] if values else math.inf)
    return out


def should_stop(history: list, histories: list, band_list: list, eta: float, strict: bool = False) -> bool:
    """W&B's decision for one running trial; histories are oriented so that lower is better."""
    passed = [(b, t) for b, t in zip(band_list, thresholds(histories, band_list, eta)) if b < len(history)]
    if not passed:
        return False
    band, threshold = passed[-1]
    return (history[band] if strict else min(history)) > threshold


class HyperbandPruner(BasePruner):
    """Prunes an Optuna trial exactly when W&B's hyperband would stop the run (one step = one metric report)."""

    def __init__(self, early_terminate: dict, maximize: bool):
        self.bands = bands(early_terminate)
        self.eta = early_terminate.get("eta", 3)
        self.strict = bool(early_terminate.get("strict", False))
        self.sign = -1.0 if maximize else 1.0

    def history(self, trial) -> list:
        """A trial's finite reports in step order, oriented so that lower is better."""
        return [self.sign * v for _, v in sorted(trial.intermediate_values.items()) if math.isfinite(v)]

    def prune(self, study, trial) -> bool:
        histories = [h for h in (self.history(t) for t in study.get_trials(deepcopy=False)) if h]
        return should_stop(self.history(trial), histories, self.bands, self.eta, self.strict)
