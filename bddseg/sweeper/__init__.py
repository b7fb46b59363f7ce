"""Offline W&B sweeps on Optuna (sweep.py): config, search space, hyperband, command, runner, storage, report.

Other entry points need one thing from here: `best_trial(sweep_id_or_name, storage=None)` -> dict with
params, value, run_dir, command (eval.py --sweep uses it).
"""
from .study import best_trial  # noqa: F401
