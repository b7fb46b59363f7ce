"""The offline agent end to end on a fake program: results, pins, target, run_cap, grid with two agents,
failures, kill + resume, heartbeats, status and report."""
import io
import itertools
import json
import os
import signal
import threading
import time

import optuna
import pytest
from fake_programs.sweep_helpers import FAKE_TRAIN, created_id, start_agent, trials, write_config

import sweep
from bddseg import config as settings
from bddseg.sweeper import storage as st
from bddseg.sweeper.agent import run_agent
from bddseg.sweeper.config import load_config
from bddseg.sweeper.study import best_trial, create_sweep


@pytest.fixture
def db(tmp_path, monkeypatch):
    """Journal storage path under tmp_path; trial folders there too; 1 s heartbeats."""
    monkeypatch.setattr(settings, "SWEEPS_DIR", tmp_path / "sweeps_db")
    monkeypatch.setenv("BDDSEG_SWEEP_HEARTBEAT", "1")
    return tmp_path / "sweeps_db" / "sweeps.journal"


def make(tmp_path, db, parameters, **kw):
    """Create a sweep of fake_train.py (as `sweep.py create` does); returns its id."""
    sid, _ = create_sweep(load_config(write_config(tmp_path / "s.yaml", parameters, **kw)), st.get_storage(db))
    return sid


def run_threads(n, sid, db, **kw):
    """n agents at once in threads of this process (each with its own storage object); their exit codes."""
    codes = [None] * n

    def one(i):
        codes[i] = run_agent(sid, str(db), out=io.StringIO(), **kw)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return codes


def run(sid, db, **kw):
    """run_agent in-process; returns (exit code, printed text)."""
    out = io.StringIO()
    code = run_agent(sid, str(db), out=out, **kw)
    return code, out.getvalue()


def by_state(ts, state):
    return [t for t in ts if t.state.name == state]


def test_random_sweep_records_results_commands_and_progress(tmp_path, db):
    sid = make(tmp_path, db, {"x": {"min": 0.0, "max": 1.0}, "arch": {"values": ["a", "b"]}, "epochs": {"value": 3}},
               method="random")
    code, out = run(sid, db, count=4)
    assert code == 0
    ts = trials(str(db), sid)
    assert len(ts) == 4 and all(t.state.name == "COMPLETE" for t in ts)
    for t in ts:
        config = t.user_attrs["config"]
        assert t.value == pytest.approx(config["x"] + 0.02)  # fake_train: miou = x + 0.01 * last epoch
        assert len(t.intermediate_values) == 3 and config["epochs"] == 3
        assert t.user_attrs["argv"][2:] == [str(FAKE_TRAIN), f"--arch={config['arch']}", "--epochs=3",
                                             f"--x={config['x']}"]  # sorted names, as W&B sends them
        folder = settings.SWEEPS_DIR / "runs" / sid / f"trial-{t.number:04d}"
        assert json.loads((folder / "args.json").read_text()) == config
        assert "fake_train done" in (folder / "output.log").read_text()
    lines = [line for line in out.splitlines() if line.startswith("trial")]
    assert len(lines) == 4 and all("COMPLETE" in line and "x=" in line and "best miou=" in line for line in lines)
    best = max(ts, key=lambda t: t.value)
    assert f"best miou={best.value:.4g} (trial {best.number})" in lines[-1]


def test_pins_run_dir_project_and_best_trial(tmp_path, db):
    sid = make(tmp_path, db, {"x": {"min": 0.0, "max": 1.0}, "epochs": {"values": [5, 6]}}, method="random",
               project="proj-x")
    code, out = run(sid, db, count=3, pins={"epochs": 1, "run_dir": str(tmp_path / "runs" / "r1")})
    assert code == 0 and "pinned for this agent: epochs=1" in out
    ts = trials(str(db), sid)
    for t in ts:
        assert t.user_attrs["pinned"] == {"epochs": 1, "run_dir": str(tmp_path / "runs" / "r1")}
        assert t.user_attrs["config"]["epochs"] == 1 and len(t.intermediate_values) == 1
        assert "epochs" not in t.params and "x" in t.params  # pinned params are not searched
        assert t.user_attrs["run_dir"] == str(tmp_path / "runs" / "r1")  # taken from the metric lines
        log = (settings.SWEEPS_DIR / "runs" / sid / f"trial-{t.number:04d}" / "output.log").read_text()
        assert f"WANDB_PROJECT=proj-x WANDB_RUN_GROUP=sweep-{sid}" in log  # the sweep's project, grouped runs
    b = best_trial(sid, str(db))
    top = max(ts, key=lambda t: t.value)
    assert b["value"] == top.value and b["number"] == top.number and b["run_dir"] == str(tmp_path / "runs" / "r1")
    assert b["params"]["x"] == top.user_attrs["config"]["x"] and "--epochs=1" in b["command"]


def test_target_stops_new_trials(tmp_path, db):
    sid = make(tmp_path, db, {"x": {"values": [0.1, 0.9, 0.2, 0.3]}}, method="grid",
               metric={"name": "miou", "goal": "maximize", "target": 0.5})
    code, out = run(sid, db)
    ts = trials(str(db), sid)
    assert code == 0 and "target miou=0.5 reached by trial 1" in out
    assert [t.user_attrs["config"]["x"] for t in by_state(ts, "COMPLETE")] == [0.1, 0.9]
    assert len(by_state(ts, "WAITING")) == 2


def test_failures_show_the_log_tail_and_stop_at_the_limit(tmp_path, db):
    sid = make(tmp_path, db, {"mode": {"values": ["crash", "nometric", "crash"]}}, method="grid")
    code, out = run(sid, db, max_failures=2)
    ts = sorted(trials(str(db), sid), key=lambda t: t.number)
    assert code == 1 and "stopping: 2 trials failed in a row" in out
    assert [t.state.name for t in ts] == ["FAIL", "FAIL", "WAITING"]
    assert ts[0].user_attrs["error"] == "exit code 1" and "fake crash in epoch 1" in ts[0].user_attrs["log_tail"]
    assert "| RuntimeError: fake crash in epoch 1" in out  # the tail is shown
    assert "no finite `miou`" in ts[1].user_attrs["error"]


def test_grid_with_two_agents_at_once_runs_each_combination_once(tmp_path, db):
    sid = make(tmp_path, db, {"x": {"values": [0.1, 0.2, 0.3, 0.4]}, "sleep": {"values": [0.05, 0.1, 0.2]}},
               method="grid")
    agents = [start_agent(["agent", sid], tmp_path, f"agent{i}.log") for i in range(2)]
    assert [a.wait(timeout=120) for a in agents] == [0, 0]
    ts = trials(str(db), sid)
    combos = sorted((t.user_attrs["config"]["x"], t.user_attrs["config"]["sleep"]) for t in ts)
    assert combos == sorted(itertools.product([0.1, 0.2, 0.3, 0.4], [0.05, 0.1, 0.2]))  # none missing, no duplicate
    assert all(t.state.name == "COMPLETE" for t in ts)
    assert len({t.user_attrs["agent"] for t in ts}) == 2  # both agents took part
    assert all("grid finished" in (tmp_path / f"agent{i}.log").read_text() for i in range(2))


def test_run_cap_holds_across_three_agents(tmp_path, db):
    sid = make(tmp_path, db, {"x": {"min": 0.0, "max": 1.0}}, method="random", run_cap=5)
    assert run_threads(3, sid, db, count=10) == [0, 0, 0]
    ts = [t for t in trials(str(db), sid) if "skipped" not in t.user_attrs]
    assert len(ts) == 5 and all(t.state.name == "COMPLETE" for t in ts)


def wait_for(condition, timeout=60, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(")")[-1].split()[0] != "Z"


def slow_trial_pid(marker):
    """pid of the running fake_train whose args say --sleep=1.0."""
    return next((int(p.name[4:]) for p in marker.glob("pid-*") if "--sleep=1.0" in p.read_text()), None)


def test_killed_agent_then_restart_finishes_the_sweep(tmp_path, db):
    marker = tmp_path / "markers"
    sid = make(tmp_path, db, {"sleep": {"values": [0.01, 1.0, 0.02, 0.03]}, "epochs": {"value": 3},
                              "marker_dir": {"value": str(marker)}}, method="grid")
    agent = start_agent(["agent", sid], tmp_path)
    child = wait_for(lambda: slow_trial_pid(marker))
    agent.send_signal(signal.SIGKILL)  # the agent dies mid-trial, no chance to clean up
    agent.wait()
    wait_for(lambda: not alive(child), timeout=10)  # its trial's process follows it
    first = {t.number: t for t in trials(str(db), sid)}
    assert first[0].state.name == "COMPLETE" and first[1].state.name == "RUNNING"

    code, out = run(sid, db)  # a new agent on the same machine
    assert code == 0 and "trial   1  FAIL      its agent is gone; queued again" in out
    ts = trials(str(db), sid)
    assert [t.state.name for t in ts if t.number == 1] == ["FAIL"] and "died" in ts[1].user_attrs["error"]
    done = by_state(ts, "COMPLETE")
    assert sorted(t.user_attrs["config"]["sleep"] for t in done) == [0.01, 0.02, 0.03, 1.0]  # each exactly once
    retry = next(t for t in done if t.user_attrs["config"]["sleep"] == 1.0)
    assert retry.system_attrs["failed_trial"] == 1
    assert next(t for t in done if t.number == 0).datetime_complete == first[0].datetime_complete  # not rerun


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the lost trial is made with study.ask
def test_stale_heartbeat_fails_and_requeues(tmp_path, db):
    sid = make(tmp_path, db, {"x": {"min": 0.0, "max": 1.0}}, method="random")
    storage = st.get_storage(db)
    study = optuna.load_study(study_name=sid, storage=storage)
    lost = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    lost.set_user_attr("agent", "another-machine:4242")
    st.record_heartbeat(storage, lost._trial_id)
    assert st.fail_dead_trials(study) == []  # fresh heartbeat: left alone
    old = time.time() - 10
    os.utime(storage.beats / str(lost._trial_id), (old, old))
    assert st.fail_dead_trials(study) == [lost.number]
    code, out = run(sid, db, count=1)
    ts = trials(str(db), sid)
    assert ts[0].state.name == "FAIL" and ts[1].state.name == "COMPLETE"
    assert ts[1].params["x"] == ts[0].params["x"] and ts[1].system_attrs["failed_trial"] == 0


def test_sigterm_to_the_agent_stops_its_trial_and_requeues_it(tmp_path, db):
    marker = tmp_path / "markers"
    sid = make(tmp_path, db, {"sleep": {"values": [1.0]}, "epochs": {"value": 20},
                              "marker_dir": {"value": str(marker)}}, method="grid")
    agent = start_agent(["agent", sid], tmp_path)
    child = wait_for(lambda: slow_trial_pid(marker))
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 130
    assert (marker / f"terminated-{child}").exists()
    ts = trials(str(db), sid)
    assert ts[0].state.name == "FAIL" and ts[0].user_attrs["error"] == "interrupted (agent stopped)"
    assert ts[1].state.name == "WAITING" and ts[1].system_attrs["failed_trial"] == 0


def test_combined_form_resumes_and_bayes_runs(tmp_path, db, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "b.yaml", {"x": {"min": 0.0, "max": 1.0}, "k": {"values": [1, 2, 3]}},
                        method="bayes", name="combined")
    assert sweep.main([str(path), "--count", "4", "--storage", str(db)]) == 0
    assert sweep.main([str(path), "--count", "3", "--storage", str(db)]) == 0
    out = capsys.readouterr().out
    sid = out.split("Created sweep ")[1].split()[0]
    assert f"Resuming sweep {sid}" in out
    ts = trials(str(db), sid)
    assert len(ts) == 7 and all(t.state.name == "COMPLETE" for t in ts)  # TPE took over after 5
    assert best_trial("combined", str(db))["sweep_id"] == sid  # a sweep name works as a reference


def cli(argv, capsys) -> str:
    """sweep.py in-process; returns what it printed."""
    assert sweep.main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def test_status_and_self_contained_report(tmp_path, db, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings, "REPORTS_DIR", tmp_path / "reports")
    path = write_config(tmp_path / "r.yaml", {"x": {"values": [0.9, 0.7, 0.1]}, "arch": {"values": ["a", "b"]},
                                              "epochs": {"value": 4}, "sleep": {"value": 0.05}}, method="grid",
                        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2}, name="reported")
    sid = created_id(cli(["--storage", db, "create", path], capsys))
    cli(["agent", sid, "--storage", db], capsys)
    status = cli(["status", sid, "--storage", db], capsys)
    ts = trials(str(db), sid)
    best = max((t for t in ts if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"best: trial {best.number}  miou={best.value:.4g}" in status and best.user_attrs["command"] in status
    assert "reported" in cli(["status", "--storage", db], capsys)

    page = tmp_path / "reports" / f"sweep-{sid}.html"
    assert str(page) in cli(["report", sid, "--storage", db], capsys)
    html = page.read_text()
    assert "<script src=\"http" not in html and "<script src='http" not in html  # plotly.js is inline
    assert html.count("Plotly.newPlot") >= 4 and len(html) > 1_000_000
    for section in ("over time", "Parallel coordinates", "Parameter importance", "per value", "Trials",
                    "Rerun it"):
        assert section in html
    assert best.user_attrs["command"].replace("'", "&#x27;") in html


def test_all_categorical_random_sweep_never_repeats_a_config(tmp_path, db):
    sid = make(tmp_path, db, {"x": {"values": [0.1, 0.2, 0.3]}, "arch": {"values": ["a", "b", "c"]}}, method="random")
    assert run_threads(3, sid, db, count=20) == [0, 0, 0]  # three agents at once, more count than the space has
    ts = trials(str(db), sid)
    configs = [(t.user_attrs["config"]["x"], t.user_attrs["config"]["arch"]) for t in ts]
    assert len(ts) == 9 and all(t.state.name == "COMPLETE" for t in ts)
    assert sorted(configs) == sorted(itertools.product([0.1, 0.2, 0.3], "abc"))  # 9 trials, no duplicate


def test_grid_order_shuffled_is_seeded_by_the_config(tmp_path, db, capsys):
    path = write_config(tmp_path / "g.yaml", {"x": {"values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}}, method="grid")
    sids = [created_id(cli(["--storage", db, "create", path, "--grid-order", "shuffled"], capsys)) for _ in range(2)]
    orders = []
    for sid in sids:
        run(sid, db)
        ts = sorted(trials(str(db), sid), key=lambda t: t.datetime_start)
        orders.append([t.user_attrs["config"]["x"] for t in ts])
    assert orders[0] == orders[1] != sorted(orders[0]) and sorted(orders[0]) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    with pytest.raises(Exception, match="not a grid"):
        sweep.main(["--storage", str(db), "create", str(write_config(tmp_path / "r.yaml", {"x": {"values": [1]}},
                                                                      method="random")), "--grid-order", "shuffled"])
