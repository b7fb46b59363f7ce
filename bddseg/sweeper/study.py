"""A sweep is an Optuna study: named by a short id, holding the validated W&B config in its user attrs.

`create` makes a new id every time (like `wandb sweep`); the combined form `sweep.py sweep.yaml` derives the
id from the config itself, so running it again (or from several agents at once) resumes the same sweep.
Grid sweeps queue every combination at creation (in the sweep's grid order, decide.grid_cells) and are marked
ready afterwards; agents wait for that. `running` says which agent, GPU and SLURM task runs what, since when.
"""
import hashlib
import json
import math
import secrets
import string
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import pandas as pd
from optuna.exceptions import DuplicatedStudyError
from optuna.trial import TrialState

from bddseg.cli import UserError

from . import storage as st
from .config import load_config
from .decide import grid_cells

ALPHABET = string.ascii_lowercase + string.digits
READY_TIMEOUT = 120  # seconds an agent waits for a grid sweep another process is still queueing


def config_id(config: dict) -> str:
    """The id the combined form uses: 8 characters from a hash of the validated config (name included)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).digest()
    n = int.from_bytes(digest[:8], "big")
    return "".join(ALPHABET[(n >> (5 * i)) % len(ALPHABET)] for i in range(8))


def new_id() -> str:
    """A random 8-character sweep id (like W&B's)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(8))


def direction(config: dict) -> str:
    """Optuna's direction for the sweep's metric goal (W&B's default goal is minimize)."""
    return "maximize" if config["metric"].get("goal") == "maximize" else "minimize"


def create_sweep(config: dict, storage, sweep_id: str = None, source: str = None) -> tuple:
    """Create the study for a validated config; returns (id, created). An existing id is resumed, not changed."""
    sid = sweep_id or new_id()
    try:
        study = optuna.create_study(study_name=sid, storage=storage, direction=direction(config))
    except DuplicatedStudyError:
        if sweep_id is None:
            return create_sweep(config, storage, None, source)
        return sid, False
    study.set_user_attr("config", config)
    study.set_user_attr("source", str(source) if source else None)
    study.set_user_attr("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if config["method"] == "grid":
        for cell in grid_cells(config):
            study.enqueue_trial(cell)
    study.set_user_attr("ready", True)
    return sid, True


def list_sweeps(storage) -> list:
    """[(id, config, summary)] for every sweep in a storage, oldest first."""
    out = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if "config" in s.user_attrs:
            out.append((s.study_name, s.user_attrs["config"], s))
    return sorted(out, key=lambda x: x[2].user_attrs.get("created") or "")


def resolve_id(ref: str, storage) -> str:
    """A sweep id from an id, `entity/project/id`, a sweep name, or a sweep config file (its combined-form id)."""
    ref = str(ref)
    sweeps = list_sweeps(storage)
    ids = optuna.get_all_study_names(storage)  # includes a sweep another process is still creating
    if Path(ref).is_file() and ref.endswith((".yaml", ".yml")):
        sid = config_id(load_config(ref))
        if sid in ids:
            return sid
        raise UserError(f"no sweep for {ref} in {st.describe(storage)} yet (run `python sweep.py {ref}` first)")
    short = ref.rstrip("/").split("/")[-1]
    if short in ids:
        return short
    named = [s[0] for s in sweeps if s[1].get("name") == ref]
    if named:
        return named[-1]
    known = ", ".join(f"{s[0]} ({s[1].get('name', 'unnamed')})" for s in sweeps[-10:]) or "none"
    raise UserError(f"no sweep {ref!r} in {st.describe(storage)} (known: {known})")


def load_sweep(ref: str, storage, wait: bool = True):
    """(study, config) for a sweep reference; waits for a grid sweep that is still being queued."""
    sid = resolve_id(ref, storage)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        study = optuna.load_study(study_name=sid, storage=storage)
        if study.user_attrs.get("ready") or (not wait and "config" in study.user_attrs):
            return study, study.user_attrs["config"]
        if time.monotonic() > deadline:
            raise UserError(f"sweep {sid} was never finished by the process creating it; create a new one")
        time.sleep(0.5)


# ---------------------------------------------------------------- reading results
def is_shown(trial) -> bool:
    """Trials a user sees: not queued ones, not those skipped because run_cap was reached first elsewhere."""
    return trial.state != TrialState.WAITING and "skipped" not in trial.user_attrs


def flat_config(trial) -> dict:
    """The trial's full program config as flat `outer/inner` names (what it ran with, pins included)."""
    return dict(trial.user_attrs.get("flat", {}))


def best(study):
    """The best COMPLETE trial (None when there is none)."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.value is not None and math.isfinite(t.value)]
    if not trials:
        return None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return (max if maximize else min)(trials, key=lambda t: t.value)


def best_trial(sweep_id, storage=None) -> dict:
    """The best finished trial of an offline sweep: params, value, run_dir, command (eval.py --sweep uses it)."""
    storage = storage if storage is not None and not isinstance(storage, (str, Path)) else st.get_storage(storage)
    study, config = load_sweep(sweep_id, storage, wait=False)
    t = best(study)
    if t is None:
        raise UserError(f"sweep {study.study_name} has no finished trial yet")
    return {"sweep_id": study.study_name, "number": t.number, "metric": config["metric"]["name"],
            "value": t.value, "params": t.user_attrs.get("config", {}), "run_dir": t.user_attrs.get("run_dir"),
            "command": t.user_attrs.get("command"), "argv": t.user_attrs.get("argv")}


def duration(trial) -> float:
    """Seconds from start to finish (to now for a running trial); nan when it never started."""
    if trial.datetime_start is None:
        return float("nan")
    end = trial.datetime_complete or datetime.now()
    return (end - trial.datetime_start).total_seconds()


def trials_frame(study) -> pd.DataFrame:
    """One row per shown trial: number, state, value, duration, start, error, run_dir, then its params."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if not is_shown(t):
            continue
        error = t.user_attrs.get("error") or ("heartbeat lost (agent killed?)" if t.state == TrialState.FAIL else "")
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value, "reports": len(t.intermediate_values),
                     "duration_s": round(duration(t), 1), "start": t.datetime_start, "error": error,
                     "run_dir": t.user_attrs.get("run_dir"), "command": t.user_attrs.get("command"),
                     **flat_config(t)})
    return pd.DataFrame(rows)


def running(study) -> list:
    """One dict per running trial: trial, agent (host:pid), worker, gpu, slurm, since, for, reports, last."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        values = [v for _, v in sorted(t.intermediate_values.items())]
        since = t.datetime_start.strftime("%Y-%m-%d %H:%M:%S") if t.datetime_start else "-"
        seconds = duration(t)
        rows.append({"trial": t.number, "agent": t.user_attrs.get("agent", "-"), "since": since,
                     "for": f"{int(seconds // 60)}m{int(seconds % 60):02d}s" if math.isfinite(seconds) else "-",
                     "reports": len(values), "last": values[-1] if values else None,
                     **{k: t.user_attrs.get(k) for k in ("worker", "gpu", "slurm")}})
    return rows
