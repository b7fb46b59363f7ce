"""The search space of a W&B sweep config: one Param per leaf parameter, with W&B's own sampling and an Optuna record.

Each W&B distribution is sampled exactly as W&B does it (the `sweeps` package's `HyperParameter.ppf` of a
uniform draw), and is recorded in Optuna under a distribution that contains every value it can produce, so
TPE can model it: log-uniform families become log-scaled ranges, q_* families stepped ranges, categoricals
categoricals. Nested `parameters` are flattened to `outer/inner` names (W&B names cannot contain '/').
"""
import json
import math
import warnings
from dataclasses import dataclass, field
from itertools import product

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

with warnings.catch_warnings():  # pydantic 2 notes the `sweeps` models' v1-style config when they are defined
    warnings.filterwarnings("ignore", message="Valid config keys have changed in V2")
    from sweeps.params import HyperParameter

SEP = "/"          # nesting separator in flat parameter names
NORMAL_SPAN = 6.0  # normal families are recorded on mu +- 6 sigma (a draw outside has probability 2e-9 and is clipped)
HP = HyperParameter


def _plain(v):
    """numpy scalars -> Python numbers (values go to JSON, YAML and command lines)."""
    return v.item() if isinstance(v, np.generic) else v


def _tidy(x: float) -> float:
    """Drop float noise such as 0.30000000000000004 (W&B's round(x/q)*q) without changing the value's meaning."""
    return float(f"{x:.12g}")


def _encode(v):
    """Optuna categorical choices must be None/bool/int/float/str: other values are stored as JSON text."""
    return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v, sort_keys=True)


@dataclass
class Param:
    """One leaf parameter: W&B's definition (`hp`) plus the Optuna distribution it is recorded under."""
    name: str
    hp: HyperParameter
    distribution: object = None           # None for constants (not searched)
    choices: list = field(default_factory=list)  # decoded values of a categorical record

    @property
    def kind(self) -> str:
        return self.hp.type

    @property
    def config(self) -> dict:
        return self.hp.config

    def sample(self, rng):
        """One W&B draw (the prior), as the value recorded in Optuna (inside `distribution`)."""
        value = _plain(self.hp.ppf(rng.uniform()))
        if isinstance(value, np.ndarray):
            value = value.item()
        return self.to_record(value)

    def to_record(self, value):
        """W&B value -> Optuna value: encoded for categoricals, clipped/snapped into numeric ranges."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return _encode(value)
        if isinstance(d, IntDistribution):
            v = int(round(min(max(value, d.low), d.high)))
            return d.low + round((v - d.low) / d.step) * d.step
        v = float(min(max(value, d.low), d.high))
        if d.step is not None:
            v = d.low + round((v - d.low) / d.step) * d.step
        return min(max(_tidy(v), d.low), d.high)

    def from_record(self, value):
        """Optuna value -> the W&B value passed to the program."""
        if isinstance(self.distribution, CategoricalDistribution):
            return self.choices[self.distribution.choices.index(value)]
        if isinstance(self.distribution, IntDistribution):
            return int(value)
        return _tidy(float(value))

    def grid_values(self) -> list:
        """W&B's grid values (as sweeps.grid_search: int_uniform -> range, q_uniform -> arange without max)."""
        c = self.config
        if self.kind == HP.CONSTANT:
            return [c["value"]]
        if self.kind == HP.CATEGORICAL:
            return list(c["values"])
        if self.kind == HP.INT_UNIFORM:
            return list(range(c["min"], c["max"] + 1))
        if self.kind == HP.Q_UNIFORM:
            return [_plain(v) for v in np.arange(c["min"], c["max"], c["q"]).tolist()]
        raise ValueError(f"Parameter {self.name} is a disallowed type with grid search")


def _stepped(lo, hi, q, log=False):
    """A range of multiples of q on [lo, hi] (ints when q and the bounds are ints); log only when q == 1."""
    lo, hi = math.floor(lo / q + 1e-9) * q, math.ceil(hi / q - 1e-9) * q
    if isinstance(q, int):
        lo, hi = int(lo), int(hi)
        if log and q == 1 and lo >= 1:
            return IntDistribution(lo, max(hi, lo), log=True)
        return IntDistribution(lo, max(hi, lo), step=q)
    return FloatDistribution(_tidy(lo), _tidy(max(hi, lo)), step=q)


def record_distribution(hp: HyperParameter):
    """The Optuna distribution that holds every value W&B's distribution `hp` can produce."""
    c, t = hp.config, hp.type
    if t == HP.CONSTANT:
        return None
    if t in (HP.CATEGORICAL, HP.CATEGORICAL_PROB):
        return CategoricalDistribution([_encode(v) for v in c["values"]])
    if t == HP.INT_UNIFORM:
        return IntDistribution(c["min"], c["max"])
    if t == HP.UNIFORM:
        return FloatDistribution(c["min"], c["max"])
    if t == HP.Q_UNIFORM:  # W&B: round(U(min, max) / q) * q
        return _stepped(round(c["min"] / c["q"]) * c["q"], round(c["max"] / c["q"]) * c["q"], c["q"])
    if t in (HP.LOG_UNIFORM_V1, HP.INV_LOG_UNIFORM_V1, HP.Q_LOG_UNIFORM_V1):  # min/max are base-e exponents
        lo, hi = (math.exp(-c["max"]), math.exp(-c["min"])) if t == HP.INV_LOG_UNIFORM_V1 else \
                 (math.exp(c["min"]), math.exp(c["max"]))
    elif t in (HP.LOG_UNIFORM_V2, HP.INV_LOG_UNIFORM_V2, HP.Q_LOG_UNIFORM_V2):
        lo, hi = c["min"], c["max"]
    elif t in (HP.NORMAL, HP.Q_NORMAL):
        lo, hi = c["mu"] - NORMAL_SPAN * c["sigma"], c["mu"] + NORMAL_SPAN * c["sigma"]
    elif t in (HP.LOG_NORMAL, HP.Q_LOG_NORMAL):
        lo, hi = math.exp(c["mu"] - NORMAL_SPAN * c["sigma"]), math.exp(c["mu"] + NORMAL_SPAN * c["sigma"])
    elif t in (HP.BETA, HP.Q_BETA):
        lo, hi = 0.0, 1.0
    else:
        raise ValueError(f"unsupported distribution for {hp.name}: {t}")
    log = t in (HP.LOG_UNIFORM_V1, HP.LOG_UNIFORM_V2, HP.INV_LOG_UNIFORM_V1, HP.INV_LOG_UNIFORM_V2,
                HP.LOG_NORMAL, HP.Q_LOG_UNIFORM_V1, HP.Q_LOG_UNIFORM_V2, HP.Q_LOG_NORMAL)
    if "q" in c:  # quantised: round(x / q) * q
        q = c["q"]
        return _stepped(round(lo / q) * q, round(hi / q) * q, q, log=log and lo > 0)
    return FloatDistribution(float(lo), float(hi), log=log and lo > 0)


def flatten(parameters: dict, prefix: str = "") -> dict:
    """{'opt': {'parameters': {'lr': {...}}}} -> {'opt/lr': {...}} (W&B's nested `parameters`)."""
    flat = {}
    for key, spec in parameters.items():
        if isinstance(spec, dict) and set(spec) == {"parameters"}:
            flat.update(flatten(spec["parameters"], f"{prefix}{key}{SEP}"))
        else:
            flat[f"{prefix}{key}"] = spec
    return flat


def nest(flat: dict) -> dict:
    """{'opt/lr': 0.1, 'bs': 8} -> {'opt': {'lr': 0.1}, 'bs': 8}: the config a W&B run receives."""
    out = {}
    for name, value in flat.items():
        *outer, leaf = name.split(SEP)
        d = out
        for key in outer:
            d = d.setdefault(key, {})
        d[leaf] = value
    return out


class Space:
    """All parameters of a sweep; `grid=True` records every parameter as a categorical over its grid values."""

    def __init__(self, parameters: dict, grid: bool = False):
        self.params = {}
        for name, spec in flatten(parameters).items():
            p = Param(name, HyperParameter(name, spec))  # fills W&B defaults, checks min < max
            if grid:
                p.choices = p.grid_values()
                p.distribution = None if p.kind == HP.CONSTANT else \
                    CategoricalDistribution([_encode(v) for v in p.choices])
            else:
                p.distribution = record_distribution(p.hp)
                if p.kind in (HP.CATEGORICAL, HP.CATEGORICAL_PROB):
                    p.choices = list(p.config["values"])
            self.params[name] = p

    def __getitem__(self, name):
        return self.params[name]

    def __contains__(self, name):
        return name in self.params

    @property
    def searched(self) -> dict:
        """Parameters Optuna samples (everything but constants)."""
        return {n: p for n, p in self.params.items() if p.distribution is not None}

    def constants(self) -> dict:
        return {n: p.config["value"] for n, p in self.params.items() if p.distribution is None}

    def grid_cells(self) -> list:
        """Every combination of the searched grid parameters as Optuna records, in W&B's order (sorted names,
        values as listed)."""
        names = sorted(self.searched)
        combos = product(*(self.params[n].choices for n in names))
        return [{n: self.params[n].to_record(v) for n, v in zip(names, combo)} for combo in combos]

    def config(self, sampled: dict, pinned: dict = None) -> dict:
        """The program's config: constants + sampled values (W&B values) + this agent's pins, nested."""
        flat = {**self.constants(), **sampled, **(pinned or {})}
        return nest({n: flat[n] for n in sorted(flat)})
