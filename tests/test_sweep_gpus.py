"""`sweep.py agent ID --gpus ...`: one worker per GPU (faked with BDDSEG_SWEEP_GPUS: no CUDA needed), CPU workers,
the refusal without CUDA, and `sweep.py status` naming what each worker runs."""
import re
import subprocess
import sys
import time

import pytest
from fake_programs.sweep_helpers import SWEEP_PY, created_id, env_for, start_agent, sweep_cli, trials, write_config

from bddseg.cli import UserError
from bddseg.sweeper import workers


def create(tmp_path, parameters, **kw) -> str:
    """`sweep.py create` of a fake_train.py sweep in tmp_path's journal; returns the id."""
    r = sweep_cli(["create", write_config(tmp_path / "s.yaml", parameters, **kw)], tmp_path)
    assert r.returncode == 0, r.stderr
    return created_id(r.stdout)


def overlaps(intervals) -> bool:
    """Any two (start, end) intervals overlapping in time."""
    intervals = sorted(intervals)
    return any(b[0] < a[1] for a, b in zip(intervals, intervals[1:]))


def test_one_trial_per_gpu_at_a_time(tmp_path):
    sid = create(tmp_path, {"x": {"values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}, "sleep": {"value": 0.15},
                            "epochs": {"value": 2}}, method="grid")
    r = sweep_cli(["agent", sid, "--gpus", "0,1"], tmp_path, BDDSEG_SWEEP_GPUS="0,1,2")
    assert r.returncode == 0, r.stdout + r.stderr
    ts = trials(tmp_path / "sweeps_db" / "sweeps.journal", sid)
    assert len(ts) == 6 and all(t.state.name == "COMPLETE" for t in ts)
    by_gpu = {}
    for t in ts:
        log = open(t.user_attrs["log"]).read()
        gpu = t.user_attrs["gpu"]
        assert f"CUDA_VISIBLE_DEVICES={gpu} " in log and t.user_attrs["worker"] == f"gpu{gpu}"  # its own GPU only
        by_gpu.setdefault(gpu, []).append((t.datetime_start, t.datetime_complete))
    assert set(by_gpu) == {"0", "1"}  # both workers took trials from the same store
    assert not any(overlaps(v) for v in by_gpu.values())  # never two trials at once on one GPU
    assert len({t.user_attrs["agent"] for t in ts}) == 2
    lines = [line for line in r.stdout.splitlines() if re.match(r"\[gpu[01]\] trial +\d+ +COMPLETE", line)]
    assert len(lines) == 6  # one progress line per trial, naming its GPU
    assert "starting 2 workers: gpu0, gpu1" in r.stdout


def test_cpu_workers_split_the_cores(tmp_path):
    sid = create(tmp_path, {"x": {"values": [0.1, 0.2, 0.3, 0.4]}}, method="grid")
    r = sweep_cli(["agent", sid, "--gpus", "cpu:2"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    ts = trials(tmp_path / "sweeps_db" / "sweeps.journal", sid)
    assert len(ts) == 4 and all(t.state.name == "COMPLETE" for t in ts)
    assert {t.user_attrs["worker"] for t in ts} <= {"cpu0", "cpu1"} and not any("gpu" in t.user_attrs for t in ts)
    shares = workers.cpu_shares(2)
    for t in ts:
        log = open(t.user_attrs["log"]).read()
        threads = len(shares[int(t.user_attrs["worker"][3:])])
        assert f"CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS={threads}" in log  # no GPU visible, its share of threads
    assert not set.intersection(*shares) or len(set.union(*shares)) == 1  # disjoint unless one core only


@pytest.mark.parametrize("gpus, fake, message", [
    ("0,1", "", "no CUDA GPU on this machine"), ("all", "", "--gpus cpu:N runs N workers"),
    ("0,3", "0,1", "GPU(s) 3 not available"), ("cpu:0", "", "cpu:N with N a positive number")])
def test_gpus_refused_clearly(monkeypatch, gpus, fake, message):
    monkeypatch.setenv(workers.GPUS_ENV, fake)
    with pytest.raises(UserError) as e:
        workers.parse_gpus(gpus)
    assert message in str(e.value)


def test_gpus_all_and_where_the_list_comes_from(monkeypatch):
    monkeypatch.setenv(workers.GPUS_ENV, "0,1,2")
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in workers.parse_gpus("all")] == ["0", "1", "2"]
    monkeypatch.delenv(workers.GPUS_ENV)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # what SLURM granted
    monkeypatch.setattr(workers, "nvidia_smi", lambda: ["0", "1"])  # a machine with GPUs
    assert [w.label for w in workers.parse_gpus("6")] == ["gpu6"]
    monkeypatch.setattr(workers, "nvidia_smi", lambda: [])  # no GPU at all: an exported variable proves nothing
    with pytest.raises(UserError, match="no CUDA GPU"):
        workers.parse_gpus("all")


def test_worker_exit_codes(monkeypatch):
    codes = iter([0, -9])

    class Proc:
        def __init__(self, *a, **k):
            self.code = next(codes)

        def wait(self):
            return self.code

    monkeypatch.setattr(workers, "start", lambda w, argv: Proc())
    ws = workers.cpu_workers(2)
    assert workers.run_workers(ws, ["x"], say=lambda *a: None) == 137  # killed by SIGKILL: 128 + 9, not -9


def test_refused_on_the_command_line_with_exit_2(tmp_path):
    sid = create(tmp_path, {"x": {"values": [0.1]}}, method="grid")
    r = sweep_cli(["agent", sid, "--gpus", "0"], tmp_path, BDDSEG_SWEEP_GPUS="")
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr
    assert trials(tmp_path / "sweeps_db" / "sweeps.journal", sid)[0].state.name == "WAITING"


def test_status_shows_what_each_worker_runs_and_since_when(tmp_path):
    marker = tmp_path / "markers"
    sid = create(tmp_path, {"x": {"values": [0.1, 0.2]}, "sleep": {"value": 1.0}, "epochs": {"value": 30},
                            "marker_dir": {"value": str(marker)}}, method="grid")
    agent = start_agent(["agent", sid, "--gpus", "0,1"], tmp_path, BDDSEG_SWEEP_GPUS="0,1",
                        SLURM_JOB_ID="77", SLURM_ARRAY_JOB_ID="70", SLURM_ARRAY_TASK_ID="3")
    try:
        end = time.monotonic() + 60
        while len(list(marker.glob("pid-*"))) < 2 and time.monotonic() < end:
            time.sleep(0.1)
        r = sweep_cli(["status", sid], tmp_path)
    finally:
        agent.terminate()
        assert agent.wait(timeout=60) == 130
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.strip().startswith("trial") and "since" in line]
    assert "running now: 2" in r.stdout and len(rows) == 2
    for gpu in ("0", "1"):
        row = next(line for line in rows if f"worker gpu{gpu}  gpu {gpu}" in line)
        assert "slurm 70_3" in row and re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\dm\d\ds\)", row)
    ts = trials(tmp_path / "sweeps_db" / "sweeps.journal", sid)
    assert sum(t.state.name == "WAITING" for t in ts) == 2  # SIGTERM to the parent: both trials queued again


def test_run_form_with_gpus_prints_one_line_per_trial(tmp_path):
    path = write_config(tmp_path / "r.yaml", {"x": {"values": [0.1, 0.2, 0.3]}}, method="grid")
    r = subprocess.run([sys.executable, str(SWEEP_PY), str(path), "--gpus", "all"], cwd=tmp_path,
                       env=env_for(tmp_path, BDDSEG_SWEEP_GPUS="5"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(re.findall(r"^\[gpu5\] trial +\d+ +COMPLETE", r.stdout, flags=re.M)) == 3
