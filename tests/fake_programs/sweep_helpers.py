"""Shared bits of the sweep tests: write a sweep config, start agents as real processes, read a sweep back."""
import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[2]
FAKE_TRAIN = Path(__file__).with_name("fake_train.py")
SWEEP_PY = ROOT / "sweep.py"


def write_config(path, parameters, method="grid", metric=None, **extra) -> Path:
    """A sweep YAML running fake_train.py; metric defaults to maximize miou."""
    config = {"program": str(FAKE_TRAIN), "method": method,
              "metric": metric or {"name": "miou", "goal": "maximize"}, "parameters": parameters, **extra}
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
    return Path(path)


def env_for(tmp_path, **extra) -> dict:
    """Environment for agent subprocesses: outputs under tmp_path, fast heartbeats."""
    return {**os.environ, "BDDSEG_SWEEPS": str(tmp_path / "sweeps_db"), "BDDSEG_SWEEP_HEARTBEAT": "1",
            "PYTHONUNBUFFERED": "1", **extra}


def sweep_cli(args, tmp_path, timeout=120, **env) -> subprocess.CompletedProcess:
    """Run `python sweep.py ARGS` to the end (cwd tmp_path)."""
    return subprocess.run([sys.executable, str(SWEEP_PY), *map(str, args)], cwd=tmp_path, env=env_for(tmp_path, **env),
                          capture_output=True, text=True, timeout=timeout)


def start_agent(args, tmp_path, log_name="agent.log", **env) -> subprocess.Popen:
    """Start `python sweep.py ARGS` in the background, output to a log file under tmp_path."""
    log = open(tmp_path / log_name, "w")
    return subprocess.Popen([sys.executable, str(SWEEP_PY), *map(str, args)], cwd=tmp_path,
                            env=env_for(tmp_path, **env), stdout=log, stderr=subprocess.STDOUT)


def created_id(stdout: str) -> str:
    """The sweep id printed by `sweep.py create`."""
    return next(line.split("ID:")[1].split()[0] for line in stdout.splitlines() if "Created sweep with ID:" in line)


def trials(storage, sweep_id):
    """All trials of a sweep (fresh read); storage is a journal path, a URL or a storage object."""
    from bddseg.sweeper.storage import get_storage
    storage = get_storage(storage) if isinstance(storage, (str, Path)) else storage
    return optuna.load_study(study_name=sweep_id, storage=storage).get_trials(deepcopy=True)
