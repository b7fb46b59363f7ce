"""Which parameters the next trial runs: W&B's priors for `random`, TPE for `bayes`, a pre-queued grid for `grid`.

- random: every parameter drawn from its W&B distribution (PriorSampler), independent of results.
- bayes: Optuna's multivariate TPE with constant liar (several agents at once do not propose the same point);
  its first BAYES_STARTUP trials are W&B prior draws, like the random method.
- grid: every combination is queued as a WAITING trial when the sweep is created; agents pop them (an atomic
  state change in the storage), so across any number of agents each combination runs exactly once.
Trials re-queued because their agent died are popped first, whatever the method.
"""
import bisect
import secrets

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import Trial, TrialState

BAYES_STARTUP = 5  # prior draws before TPE takes over (Optuna's default is 10; sweeps here are short)


class PriorSampler(BaseSampler):
    """Samples each parameter from its W&B distribution (exactly W&B's `random` method)."""

    def __init__(self, space, seed=None):
        self.space = space
        self.rng = np.random.default_rng(secrets.randbits(64) if seed is None else seed)

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.space[param_name].sample(self.rng)


class BayesSampler(BaseSampler):
    """TPE (multivariate, constant liar) after BAYES_STARTUP finished trials; W&B prior draws before that."""

    def __init__(self, space, n_startup=BAYES_STARTUP, seed=None):
        self.n_startup = n_startup
        self.prior = PriorSampler(space, seed)
        self.tpe = TPESampler(n_startup_trials=n_startup, multivariate=True, constant_liar=True, seed=seed)

    def _warm(self, study) -> bool:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) >= self.n_startup

    def infer_relative_search_space(self, study, trial):
        return self.tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if self._warm(study):
            return self.tpe.sample_independent(study, trial, param_name, param_distribution)
        return self.prior.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.tpe.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.tpe.after_trial(study, trial, state, values)


def make_sampler(method: str, space, seed=None):
    """The Optuna sampler for a W&B method (grid trials are pre-queued, so any sampler works for them)."""
    return BayesSampler(space, seed=seed) if method == "bayes" else PriorSampler(space, seed)


def is_retry(trial) -> bool:
    """True for a trial queued again because its agent died."""
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) is not None


def fresh_rank(study, number: int) -> int:
    """How many first-attempt trials (not re-queued ones) were created before trial `number`."""
    fresh = sorted(t.number for t in study.get_trials(deepcopy=False) if not is_retry(t))
    return bisect.bisect_left(fresh, number)


def pop_waiting(study, run_cap=None):
    """Atomically take a queued trial (retries first, then grid cells in order), or None when none is left."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    waiting.sort(key=lambda t: (not is_retry(t), t.number))
    fresh = sorted(t.number for t in study.get_trials(deepcopy=False) if not is_retry(t)) if run_cap else []
    for t in waiting:
        if run_cap is not None and not is_retry(t) and bisect.bisect_left(fresh, t.number) >= run_cap:
            continue
        try:
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return Trial(study, t._trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


def next_trial(study, method: str, run_cap=None):
    """The trial this agent runs next: a queued one if any, else a new one (not for grid); None when done.

    With run_cap, a new trial beyond the cap (another agent got there first) is returned as (trial, False).
    """
    trial = pop_waiting(study, run_cap)
    if trial is not None or method == "grid":
        return trial, True
    trial = study.ask()
    within = run_cap is None or is_retry(study._storage.get_trial(trial._trial_id)) or \
        fresh_rank(study, trial.number) < run_cap
    return trial, within


def suggest(trial, space, skip=()) -> dict:
    """Sample (or read back) every searched parameter not in `skip` (pinned); returns W&B values by flat name."""
    values = {}
    for name, p in space.searched.items():
        if name in skip:
            continue
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            v = trial.suggest_categorical(name, d.choices)
        elif isinstance(d, FloatDistribution):
            v = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        else:
            v = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        values[name] = p.from_record(v)
    return values
