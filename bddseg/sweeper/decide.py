"""What a sweep does next, decided as W&B's sweep engine decides it: plain data in, plain data out, no storage.

The two questions W&B's `sweeps` package answers (`sweeps.next_runs`, `sweeps.stop_runs`), for the offline agent:

- `next_runs(config, trials, n=1, seed=None, pins=())` -> up to n parameter dicts (W&B values by flat name) of the
  next runs; [] when the sweep is done, and `why_done(config, trials)` then says why (target reached,
  run_cap reached, grid finished).
- `stop_runs(config, trials)` -> ids of running trials that early termination stops: W&B's own
  `sweeps.hyperband_stopping.hyperband_stop_runs`; with `strict: true`, W&B's bands and thresholds judged
  on the value *at* the band instead of the best so far.

`config` is a validated sweep config (config.validate). `trials` is a list in creation order of dicts:

    {"id": 3,                      # any hashable: what stop_runs returns and messages name
     "state": "finished",          # queued | running | finished | failed | stopped
     "params": {"opt/lr": 0.01},   # W&B values by flat name ('/' joins nested names); pinned ones left out
     "history": [0.41, 0.45],      # the metric's finite values in report order
     "value": 0.45,                # final metric of a finished trial, else None
     "retry_of": None}             # optional: id of the trial (its agent died) that this queued one re-runs

Queued trials come first (re-runs before the others), then each method's new points:
- grid: W&B's grid (`Space.grid_cells` order; with `grid_order: shuffled` in the stored config, that order
  shuffled by `grid_seed`, see `grid_cells`), every point no started trial has taken;
- random: independent draws from W&B's own distributions (`space.Param.sample`);
- bayes: Optuna's multivariate TPE with constant liar, fitted in memory on the trials (running and queued
  trials are the "liars", so agents running at once get different points); W&B prior draws until
  BAYES_STARTUP trials have finished or stopped.
random and bayes never repeat a point a trial already has: a repeated draw is drawn again (REDRAWS times, then
from the points left when every parameter is categorical). Such a space that has run every combination is done.
run_cap counts started first attempts: not queued trials, not re-runs.
"""
import copy
import json
import math
import random
import warnings
from itertools import product

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from .space import Space

with warnings.catch_warnings():  # pydantic 2 notes the `sweeps` models' v1-style config when they are defined
    warnings.filterwarnings("ignore", message="Valid config keys have changed in V2")
    from sweeps import RunState, SweepRun
    from sweeps.hyperband_stopping import hyperband_stop_runs

BAYES_STARTUP = 5  # prior draws before TPE takes over (Optuna's default is 10; sweeps here are short)
REDRAWS = 50       # draws of a new point before falling back to the points left (all-categorical) or a repeat
MAX_COMBINATIONS = 100_000  # larger categorical spaces are not enumerated (a repeat there is very unlikely)
STARTED = ("running", "finished", "failed", "stopped")
RUN_STATES = {"queued": RunState.pending, "running": RunState.running, "finished": RunState.finished,
              "failed": RunState.failed, "stopped": RunState.killed}
TPE_STATES = {"finished": TrialState.COMPLETE, "stopped": TrialState.PRUNED, "running": TrialState.RUNNING,
              "queued": TrialState.RUNNING}  # failed trials teach TPE nothing


def key(params: dict) -> str:
    """Canonical text of a parameter dict (values may be lists or dicts), to compare points."""
    return json.dumps(params, sort_keys=True, default=str)


def point_of(space, trial: dict) -> dict:
    """A trial's values of the space's searched parameters (what an agent's pins hold constant left out)."""
    return {name: v for name, v in trial["params"].items() if name in space.searched}


def maximize(config: dict) -> bool:
    return config["metric"].get("goal") == "maximize"


def started(trials: list) -> list:
    """First attempts that ran or run (what run_cap counts)."""
    return [t for t in trials if t["state"] in STARTED and t.get("retry_of") is None]


def queued(trials: list) -> list:
    """Queued trials in the order they run: re-runs of dead agents' trials first, then by position."""
    return sorted((t for t in trials if t["state"] == "queued"), key=lambda t: t.get("retry_of") is None)


def target_hit(config: dict, trials: list):
    """Id of the first trial with a metric value reaching metric.target (None when none did or no target)."""
    target = config["metric"].get("target")
    if target is None:
        return None
    up = maximize(config)
    for t in trials:
        values = list(t.get("history") or []) + ([t["value"]] if t.get("value") is not None else [])
        if any(math.isfinite(v) and (v >= target if up else v <= target) for v in values):
            return t["id"]
    return None


def grid_cells(config: dict) -> list:
    """The grid as Optuna records in the sweep's order: W&B's, or shuffled by `grid_seed` (`grid_order: shuffled`)."""
    cells = Space(config["parameters"], grid=True).grid_cells()
    if config.get("grid_order") == "shuffled":
        random.Random(config.get("grid_seed", 0)).shuffle(cells)
    return cells


def grid_left(config: dict, trials: list) -> list:
    """The grid's points, in the sweep's order, that no started trial has taken."""
    space = Space(config["parameters"], grid=True)
    taken = {key(t["params"]) for t in trials if t["state"] in STARTED}
    cells = ({n: space[n].from_record(v) for n, v in cell.items()} for cell in grid_cells(config))
    return [c for c in cells if key(c) not in taken]


def categorical(space) -> bool:
    """Every searched parameter is categorical: a finite space that random and bayes can run out of."""
    searched = space.searched
    return bool(searched) and all(isinstance(p.distribution, CategoricalDistribution) for p in searched.values())


def combinations(space) -> list:
    """Every point (W&B values) of an all-categorical space of at most MAX_COMBINATIONS points, else []."""
    searched = space.searched
    if not categorical(space) or math.prod(len(p.choices) for p in searched.values()) > MAX_COMBINATIONS:
        return []
    names = list(searched)
    return [dict(zip(names, values)) for values in product(*(searched[n].choices for n in names))]


def exhausted(config: dict, trials: list) -> bool:
    """A random or bayes sweep over categorical values only, where every combination has a trial."""
    if config["method"] == "grid" or len(trials) > MAX_COMBINATIONS:
        return False
    space = Space(config["parameters"])
    if not categorical(space) or math.prod(len(p.choices) for p in space.searched.values()) > len(trials):
        return False
    return not {key(p) for p in combinations(space)} - {key(point_of(space, t)) for t in trials}


def searched_by_agent(config: dict, pins=()) -> dict:
    """The config without the parameters an agent pins (`--param`): trials record only the others, so points are
    compared, de-duplicated and counted over those (a grid keeps its cells: pins override them when they run)."""
    if not pins or config["method"] == "grid":
        return config
    params = copy.deepcopy(config["parameters"])
    for name in pins:
        *path, last = name.split("/")
        node = params
        for part in path:
            node = (node.get(part) or {}).get("parameters") or {}
        node.pop(last, None)
    return {**config, "parameters": params}


def why_done(config: dict, trials: list, pins=()):
    """Why no new run may start (target reached, run_cap reached, grid finished), or None."""
    config = searched_by_agent(config, pins)
    metric, run_cap = config["metric"], config.get("run_cap")
    hit = target_hit(config, trials)
    if hit is not None:
        return f"target {metric['name']}={metric['target']} reached by trial {hit}: no new trials"
    if run_cap and len(started(trials)) >= run_cap:
        return f"run_cap {run_cap} reached: no new trials"
    if config["method"] == "grid" and not queued(trials) and not grid_left(config, trials):
        return "grid finished: every combination has run or is running"
    if not queued(trials) and exhausted(config, trials):
        return "every combination of the categorical values has run or is running: no new trials"
    return None


def next_runs(config: dict, trials: list, n: int = 1, seed=None, pins=()) -> list:
    """Parameter dicts (W&B values by flat name) of up to n next runs; [] when the sweep is done. `pins`: names the
    agent holds constant (left out of the points)."""
    config = searched_by_agent(config, pins)
    if why_done(config, trials):
        return []
    if config.get("run_cap"):
        n = min(n, config["run_cap"] - len(started(trials)))
    out = [dict(t["params"]) for t in queued(trials)][:n]
    if len(out) < n:
        out += propose(config, trials, n - len(out), seed, exclude={key(p) for p in out})
    return out


def propose(config: dict, trials: list, n: int, seed=None, exclude=()) -> list:
    """n new points of the sweep's method (fewer for a grid with fewer points left)."""
    method = config["method"]
    if method == "grid":
        return [c for c in grid_left(config, trials) if key(c) not in exclude][:n]
    space, rng = Space(config["parameters"]), np.random.default_rng(seed)
    taken = Taken(space, trials, exclude, rng)
    prior = lambda: {name: p.from_record(p.sample(rng)) for name, p in space.searched.items()}  # noqa: E731
    if method == "bayes" and sum(t["state"] in ("finished", "stopped") for t in trials) >= BAYES_STARTUP:
        return tpe(config, space, trials, n, seed, taken)
    return taken.fresh([prior] * n)


class Taken:
    """The points trials already have (any state), and new points drawn so that none repeats one of them."""

    def __init__(self, space, trials: list, exclude, rng):
        self.space, self.rng = space, rng
        self.keys = {key(point_of(space, t)) for t in trials} | set(exclude)

    def new(self, draw):
        """draw() until a point no trial has (REDRAWS tries); then one of the points left, None when none is."""
        for _ in range(REDRAWS):
            point = draw()
            if key(point) not in self.keys:
                return point
        points = combinations(self.space)
        if not points:  # a continuous or huge space: a repeat after REDRAWS tries is as good as any point
            return point
        left = [p for p in points if key(p) not in self.keys]
        return left[self.rng.integers(len(left))] if left else None

    def fresh(self, draws: list) -> list:
        """One new point per draw function, each also new to the others (fewer when the space runs out)."""
        out = []
        for draw in draws:
            point = self.new(draw)
            if point is None:
                break
            self.keys.add(key(point))
            out.append(point)
        return out


def tpe(config: dict, space, trials: list, n: int, seed=None, taken=None) -> list:
    """n new points from Optuna's TPE (multivariate, constant liar) fitted on the trials in an in-memory study."""
    storage = optuna.storages.InMemoryStorage()
    storage.create_new_study([StudyDirection.MAXIMIZE if maximize(config) else StudyDirection.MINIMIZE], "decide")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(n_startup_trials=BAYES_STARTUP, multivariate=True, constant_liar=True,
                                             seed=seed)
        study = optuna.Study("decide", storage, sampler=sampler)
        for t in trials:
            frozen = as_optuna(space, t)
            if frozen is not None:
                study.add_trial(frozen)
        ask = lambda: suggest(study.ask(), space)  # noqa: E731  (asked trials stay running: liars for the next)
        return (taken or Taken(space, trials, (), np.random.default_rng(seed))).fresh([ask] * n)


def as_optuna(space, trial: dict):
    """A plain trial as an Optuna FrozenTrial for TPE (None for failed ones); values outside the space are left out."""
    state = TPE_STATES.get(trial["state"])
    value = trial.get("value")
    if state is None or (state == TrialState.COMPLETE and (value is None or not math.isfinite(value))):
        return None
    params, distributions = {}, {}
    searched = space.searched
    for name, v in trial["params"].items():
        if name in searched:
            try:
                record = searched[name].to_record(v)
                searched[name].distribution.to_internal_repr(record)  # ValueError: not one of the choices
            except (ValueError, TypeError):
                continue
            params[name], distributions[name] = record, searched[name].distribution
    history = {i: float(v) for i, v in enumerate(trial.get("history") or [])}
    return create_trial(state=state, value=value if state == TrialState.COMPLETE else None, params=params,
                        distributions=distributions, intermediate_values=history)


def suggest(trial, space) -> dict:
    """Every searched parameter of the space from an Optuna trial, as W&B values by flat name."""
    values = {}
    for name, p in space.searched.items():
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            v = trial.suggest_categorical(name, d.choices)
        elif isinstance(d, FloatDistribution):
            v = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        else:
            v = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        values[name] = p.from_record(v)
    return values


# ---------------------------------------------------------------- early termination
def sweep_runs(config: dict, trials: list) -> list:
    """The trials as W&B SweepRuns named by position (pydantic 2 takes the fields by their camelCase aliases)."""
    metric = config["metric"]["name"]
    return [SweepRun(name=str(i), state=RUN_STATES[t["state"]],
                     sampledHistory=[{metric: v} for v in t.get("history") or []]) for i, t in enumerate(trials)]


def stop_runs(config: dict, trials: list) -> list:
    """Ids of running trials to stop: W&B's hyperband (its bands count metric reports); [] without early_terminate."""
    early_terminate = config.get("early_terminate")
    if not early_terminate:
        return []
    runs = sweep_runs(config, trials)
    stop = hyperband_stop_runs(runs, config)
    if early_terminate.get("strict"):
        sign = -1.0 if maximize(config) else 1.0
        stop = [r for r in runs if r.state == RunState.running and strict_stop(r, config["metric"]["name"], sign)]
    return [trials[int(r.name)]["id"] for r in stop]


def strict_stop(run, metric: str, sign: float) -> bool:
    """`strict: true`: the run's value at the last band it passed is worse than W&B's threshold for that band."""
    history = [sign * v for v in run.metric_history(metric, filter_invalid=True)]
    info = run.early_terminate_info  # hyperband_stop_runs leaves its bands and thresholds on each running run
    passed = [(b, limit) for b, limit in zip(info["bands"], info["thresholds"]) if b < len(history)]
    return bool(passed) and history[passed[-1][0]] > passed[-1][1]


def bands(early_terminate: dict) -> list:
    """W&B's bands (metric-report counts at which runs are judged) for an early_terminate config; ValueError as W&B."""
    probe = SweepRun(state=RunState.running)
    hyperband_stop_runs([probe], {"metric": {"name": "m"}, "early_terminate": {"type": "hyperband", **early_terminate}})
    return probe.early_terminate_info["bands"]
