"""Offline W&B sweeps on Optuna, behind sweep.py. One module per job:

- config: load and validate a sweep YAML with W&B's own schema;  space: its parameters, sampled as W&B does;
- decide: what runs next and what stops (plain data in and out, W&B's engine rules);
- agent: the loop (read trials -> decide -> claim -> run -> record);  trials: the store side of that loop;
- command: a trial's argv from `command` macros;  runner: the trial's process and its metric lines;
- storage: journal file / database, heartbeats;  study: a sweep as an Optuna study, and its results;
- sweep_report: the self-contained HTML report.

Other entry points need one thing from here: `best_trial(sweep_id_or_name, storage=None)` -> dict with
params, value, run_dir, command (eval.py --sweep uses it).
"""
from .study import best_trial  # noqa: F401
