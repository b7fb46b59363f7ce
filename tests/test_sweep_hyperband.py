"""Hyperband early termination: decide.stop_runs is W&B's hyperband on report counts, and a bad trial really stopped."""
import random

import optuna
import pytest
from fake_programs.sweep_helpers import write_config
from sweeps import RunState, SweepRun
from sweeps.hyperband_stopping import hyperband_stop_runs

from bddseg import config as settings
from bddseg.sweeper.agent import run_agent
from bddseg.sweeper.config import load_config
from bddseg.sweeper.decide import bands, stop_runs
from bddseg.sweeper.storage import get_storage
from bddseg.sweeper.study import create_sweep


def test_bands_follow_wandb():
    assert bands({"min_iter": 2, "eta": 2})[:4] == [2, 4, 8, 16]
    assert bands({"min_iter": 3, "eta": 3})[:3] == [3, 9, 27]
    assert bands({"max_iter": 27, "s": 2, "eta": 3}) == [3, 9]
    assert bands({"max_iter": 100, "s": 3, "eta": 3}) == [3, 11, 33]
    with pytest.raises(ValueError):
        bands({"max_iter": 2, "s": 1, "eta": 3})


@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_decisions_equal_wandbs_hyperband_on_random_histories(goal):
    rng = random.Random(0)
    et = {"type": "hyperband", "min_iter": 1, "eta": 2}
    config = {"method": "random", "metric": {"name": "m", "goal": goal}, "early_terminate": et,
              "parameters": {"a": {"values": [1]}}}
    checked = stopped = 0
    for _ in range(150):
        levels = [rng.random() for _ in range(6)]  # each run has its own level, plus noise
        runs = [SweepRun(name=str(i), state=rng.choice([RunState.running, RunState.finished]),
                         sampledHistory=[{"m": levels[i] + 0.2 * rng.random()} for _ in range(rng.randint(0, 9))])
                for i in range(6)]
        theirs = {r.name for r in hyperband_stop_runs(runs, config)}
        trials = [{"id": f"t{r.name}", "state": r.state, "params": {"a": 1},
                   "history": [h["m"] for h in r.history], "value": None} for r in runs]
        ours = stop_runs(config, trials)
        assert ours == [f"t{name}" for name in sorted(theirs, key=int)]
        running = [r for r in runs if r.state == RunState.running]
        checked, stopped = checked + len(running), stopped + len(ours)
    assert checked > 300 and 0.1 < stopped / checked < 0.9  # both outcomes well exercised


def test_strict_judges_the_value_at_the_band():
    def config(strict):
        return {"method": "random", "metric": {"name": "m", "goal": "minimize"}, "parameters": {"a": {"value": 1}},
                "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2, "strict": strict}}
    others = [[0.5, 0.5, 0.5], [0.6, 0.6, 0.6]]  # lower is better
    history = [0.1, 0.9, 0.9]  # fine early, bad at the band
    trials = [{"id": i, "state": "finished", "params": {}, "history": h, "value": h[-1]} for i, h in enumerate(others)]
    trials.append({"id": "r", "state": "running", "params": {}, "history": history, "value": None})
    assert stop_runs(config(False), trials) == []
    assert stop_runs(config(True), trials) == ["r"]


def test_a_clearly_bad_trial_is_stopped_and_its_process_terminated(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "SWEEPS_DIR", tmp_path / "sweeps_db")
    marker = tmp_path / "markers"
    path = write_config(tmp_path / "hb.yaml", {"x": {"values": [0.9, 0.8, 0.1]}, "epochs": {"value": 12},
                                                 "sleep": {"value": 0.1}, "marker_dir": {"value": str(marker)}},
                        method="grid", early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2})
    storage = get_storage(tmp_path / "sweeps_db" / "sweeps.journal")
    sid, _ = create_sweep(load_config(path), storage)
    assert run_agent(sid, storage, kill_delay=5) == 0
    study = optuna.load_study(study_name=sid, storage=storage)
    by_x = {t.user_attrs["config"]["x"]: t for t in study.trials}
    assert by_x[0.9].state.name == by_x[0.8].state.name == "COMPLETE" and len(by_x[0.9].intermediate_values) == 12
    bad = by_x[0.1]
    assert bad.state.name == "PRUNED"
    assert 3 <= len(bad.intermediate_values) < 8  # judged at the band after 2 reports (index 2 = 3rd report)
    pid = next(p.name.split("-")[1] for p in marker.glob("pid-*") if "--x=0.1" in p.read_text())
    assert (marker / f"terminated-{pid}").read_text() == "SIGTERM"  # stopped cleanly, not killed
