"""decide.py on plain data only (no storage, no subprocess): grid, random, bayes, run_cap, target, hyperband."""
import itertools
import random

import numpy as np
import pytest
from sweeps import RunState, SweepRun
from sweeps.hyperband_stopping import hyperband_stop_runs

from bddseg.sweeper.config import validate
from bddseg.sweeper.decide import BAYES_STARTUP, next_runs, stop_runs, why_done

GRID = {"a": {"values": [1, 2, 3]}, "b": {"distribution": "int_uniform", "min": 0, "max": 1},
        "c": {"values": [[1, 2], {"k": "v"}]}, "d": {"value": "constant"}}
SPACE = {"lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
         "x": {"min": 0.0, "max": 1.0}, "k": {"distribution": "int_uniform", "min": 1, "max": 8},
         "q": {"distribution": "q_uniform", "min": 0, "max": 12, "q": 3}, "arch": {"values": ["r18", "r34", "r50"]}}


def sweep(method, parameters, **extra):
    return validate({"program": "train.py", "method": method, "metric": {"name": "m", "goal": "maximize"},
                     "parameters": parameters, **extra})


def finished(i, params, value, **extra):
    return {"id": i, "state": "finished", "params": params, "history": [value], "value": value, **extra}


def inside(p) -> bool:
    """A point of SPACE within its W&B distribution."""
    return (1e-5 <= p["lr"] <= 1e-1 and 0.0 <= p["x"] <= 1.0 and isinstance(p["k"], int) and 1 <= p["k"] <= 8
            and p["q"] in (0, 3, 6, 9, 12) and p["arch"] in ("r18", "r34", "r50"))


def test_grid_gives_every_point_exactly_once_then_nothing():
    config, trials = sweep("grid", GRID), []
    while True:
        runs = next_runs(config, trials)
        if not runs:
            break
        assert len(runs) == 1
        state = random.Random(len(trials)).choice(["finished", "failed", "stopped", "running"])
        trials.append({"id": len(trials), "state": state, "params": runs[0], "history": [], "value": None})
    points = [t["params"] for t in trials]
    expected = [{"a": a, "b": b, "c": c} for a, b, c in itertools.product([1, 2, 3], [0, 1], [[1, 2], {"k": "v"}])]
    assert sorted(map(repr, points)) == sorted(map(repr, expected))  # each once (none twice, none missing)
    assert why_done(config, trials) == "grid finished: every combination has run or is running"
    assert next_runs(config, trials, n=5) == []


def test_grid_n_and_queued_points():
    config = sweep("grid", {"a": {"values": [1, 2, 3, 4]}})
    assert next_runs(config, [], n=10) == [{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}]
    trials = [{"id": 0, "state": "finished", "params": {"a": 1}, "history": [1.0], "value": 1.0},
              {"id": 1, "state": "queued", "params": {"a": 3}, "history": [], "value": None},  # queued in a store
              {"id": 2, "state": "failed", "params": {"a": 2}, "history": [], "value": None},
              {"id": 3, "state": "queued", "params": {"a": 2}, "history": [], "value": None, "retry_of": 2}]
    assert next_runs(config, trials, n=10) == [{"a": 2}, {"a": 3}, {"a": 4}]  # the re-run first, no point twice
    assert why_done(config, trials) is None


def test_random_draws_inside_the_distributions_and_a_seed_repeats_them():
    config = sweep("random", SPACE)
    runs = next_runs(config, [], n=300, seed=7)
    assert len(runs) == 300 and all(inside(p) for p in runs)
    assert next_runs(config, [], n=300, seed=7) == runs
    assert next_runs(config, [], n=300, seed=8) != runs
    assert len({p["x"] for p in runs}) == 300 and {p["arch"] for p in runs} == {"r18", "r34", "r50"}
    lr = np.log10([p["lr"] for p in runs])
    assert abs(np.mean(lr < -3) - 0.5) < 0.1  # log-uniform: half below the geometric middle


def test_random_ignores_results_but_runs_queued_reruns_first():
    config = sweep("random", {"x": {"min": 0.0, "max": 1.0}})
    rerun = {"id": 1, "state": "queued", "params": {"x": 0.25}, "history": [], "value": None, "retry_of": 0}
    runs = next_runs(config, [finished(0, {"x": 0.25}, 0.3), rerun], n=3, seed=1)
    assert runs[0] == {"x": 0.25} and len(runs) == 3 and all(0 <= p["x"] <= 1 for p in runs[1:])


def objective(p) -> float:
    """Best at x = 0.8 and arch r34."""
    return 1.0 - (p["x"] - 0.8) ** 2 - (0.0 if p["arch"] == "r34" else 0.3)


def test_bayes_starts_with_prior_draws_then_concentrates_on_the_better_region():
    config = sweep("bayes", SPACE)
    early = [finished(i, p, objective(p)) for i, p in enumerate(next_runs(config, [], n=BAYES_STARTUP - 1, seed=0))]
    assert next_runs(config, early, seed=3) == next_runs(sweep("random", SPACE), [], seed=3)  # prior draws

    trials = [finished(i, p, objective(p)) for i, p in enumerate(next_runs(sweep("random", SPACE), [], 40, seed=1))]
    runs = next_runs(config, trials, n=20, seed=0)
    assert len(runs) == 20 and all(inside(p) for p in runs)
    assert next_runs(config, trials, n=20, seed=0) == runs  # seeded: reproducible
    seen = {t["params"]["x"] for t in trials}
    assert len({p["x"] for p in runs} - seen) == 20  # new points of a continuous space, no two alike (constant liar)
    prior_x = np.mean([abs(t["params"]["x"] - 0.8) for t in trials])
    assert np.mean([abs(p["x"] - 0.8) for p in runs]) < 0.6 * prior_x
    assert sum(p["arch"] == "r34" for p in runs) >= 12


def test_bayes_learns_from_stopped_and_running_trials_and_skips_what_it_cannot_use():
    config = sweep("bayes", {"x": {"min": 0.0, "max": 1.0}})
    trials = [finished(i, {"x": x}, x) for i, x in enumerate([0.1, 0.2, 0.3, 0.9])]
    trials += [{"id": 4, "state": "stopped", "params": {"x": 0.05}, "history": [0.01], "value": None},
               {"id": 5, "state": "running", "params": {"x": 0.95}, "history": [], "value": None},
               {"id": 6, "state": "failed", "params": {"x": 0.5}, "history": [], "value": None},
               {"id": 7, "state": "finished", "params": {"x": 0.7, "gone": 1}, "history": [], "value": float("nan")}]
    runs = next_runs(config, trials, n=4, seed=0)
    assert len(runs) == 4 and all(0.0 <= p["x"] <= 1.0 for p in runs)


def test_run_cap_limits_started_first_attempts():
    config = sweep("random", {"x": {"min": 0.0, "max": 1.0}}, run_cap=3)
    trials = [finished(0, {"x": 0.1}, 0.1), {"id": 1, "state": "failed", "params": {"x": 0.2}, "history": [],
                                             "value": None}]
    assert len(next_runs(config, trials, n=5)) == 1  # one left under the cap
    rerun = {"id": 2, "state": "running", "params": {"x": 0.2}, "history": [], "value": None, "retry_of": 1}
    assert len(next_runs(config, trials + [rerun], n=5)) == 1  # a re-run is not counted
    trials.append({"id": 3, "state": "running", "params": {"x": 0.3}, "history": [], "value": None})
    assert next_runs(config, trials) == [] and next_runs(config, trials, n=4) == []
    assert why_done(config, trials) == "run_cap 3 reached: no new trials"
    grid = sweep("grid", {"a": {"values": [1, 2, 3, 4]}}, run_cap=2)
    assert next_runs(grid, [], n=4) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("goal, values, hit", [("maximize", [0.2, 0.6], 1), ("minimize", [0.7, 0.4], 1),
                                               ("maximize", [0.2, 0.4], None)])
def test_target_reached_ends_the_sweep(goal, values, hit):
    config = validate({"program": "t.py", "method": "bayes", "parameters": {"x": {"min": 0.0, "max": 1.0}},
                       "metric": {"name": "m", "goal": goal, "target": 0.5}})
    trials = [{"id": i, "state": "running", "params": {"x": v}, "history": [v], "value": None}
              for i, v in enumerate(values)]
    if hit is None:
        assert len(next_runs(config, trials)) == 1 and why_done(config, trials) is None
    else:
        assert next_runs(config, trials) == []
        assert why_done(config, trials) == f"target m=0.5 reached by trial {hit}: no new trials"
    trials = [finished(0, {"x": 0.5}, 0.5)]  # a final value reaching it counts too
    assert next_runs(config, trials) == []


@pytest.mark.parametrize("early_terminate", [{"type": "hyperband", "min_iter": 2, "eta": 3},
                                             {"type": "hyperband", "max_iter": 27, "s": 3, "eta": 3}])
def test_stop_runs_is_wandbs_hyperband_on_random_scenarios(early_terminate):
    rng = random.Random(1)
    config = sweep("random", {"x": {"min": 0.0, "max": 1.0}}, early_terminate=early_terminate)
    states = {"running": RunState.running, "finished": RunState.finished, "failed": RunState.failed,
              "stopped": RunState.killed, "queued": RunState.pending}
    stopped = running = 0
    for _ in range(100):
        trials = []
        for i in range(rng.randint(1, 10)):
            state = rng.choice(list(states))
            level = rng.random()
            history = [] if state == "queued" else [level + 0.3 * rng.random() for _ in range(rng.randint(0, 30))]
            trials.append({"id": 100 + i, "state": state, "params": {"x": level}, "history": history,
                           "value": history[-1] if state == "finished" and history else None})
        runs = [SweepRun(name=str(t["id"]), state=states[t["state"]], sampledHistory=[{"m": v} for v in t["history"]])
                for t in trials]
        assert stop_runs(config, trials) == [int(r.name) for r in hyperband_stop_runs(runs, config)]
        stopped += len(stop_runs(config, trials))
        running += sum(t["state"] == "running" for t in trials)
    assert 0.1 < stopped / running < 0.9
    assert stop_runs(sweep("random", {"x": {"min": 0.0, "max": 1.0}}), trials) == []  # no early_terminate


CATEGORICAL_3X3 = {"a": {"values": [1, 2, 3]}, "b": {"values": ["x", "y", "z"]}}


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_all_categorical_spaces_run_without_replacement_then_end(method):
    config, trials = sweep(method, CATEGORICAL_3X3), []
    while True:
        runs = next_runs(config, trials, seed=len(trials))
        if not runs:
            break
        p = runs[0]
        trials.append(finished(len(trials), p, float(p["a"] + (p["b"] == "y"))))
    assert len(trials) == 9 and len({repr(sorted(t["params"].items())) for t in trials}) == 9  # no repeat
    assert "every combination" in why_done(config, trials)
    assert len(next_runs(config, trials[:4], n=9, seed=0)) == 5  # a batch is new to the trials and to itself


def test_grid_in_a_seeded_shuffled_order():
    parameters = {"a": {"values": list(range(8))}, "b": {"values": ["x", "y"]}}
    ordered = next_runs(sweep("grid", parameters), [], n=16)
    shuffled = next_runs(sweep("grid", parameters) | {"grid_order": "shuffled", "grid_seed": 3}, [], n=16)
    assert shuffled != ordered and sorted(map(repr, shuffled)) == sorted(map(repr, ordered))
    assert next_runs(sweep("grid", parameters) | {"grid_order": "shuffled", "grid_seed": 3}, [], n=16) == shuffled
    assert next_runs(sweep("grid", parameters) | {"grid_order": "shuffled", "grid_seed": 4}, [], n=16) != shuffled


def test_pinned_parameters_keep_points_unique_and_the_space_finite():
    """An agent pinning `b` (--param b=0) records trials without it: points are compared over `a` alone."""
    config = sweep("random", {"a": {"values": [1, 2, 3]}, "b": {"values": [0, 1]}})
    trials = [{"id": i, "state": "finished", "params": {"a": a}, "history": [0.5], "value": 0.5}
              for i, a in enumerate([1, 3])]
    assert next_runs(config, trials, n=5, seed=0, pins={"b": 0}) == [{"a": 2}]  # the one point left, then none
    done = trials + [{"id": 2, "state": "running", "params": {"a": 2}, "history": [], "value": None}]
    assert next_runs(config, done, seed=0, pins={"b": 0}) == []
    assert "every combination" in why_done(config, done, {"b": 0})
    other = [{**t, "params": {**t["params"], "b": 1}} for t in done]  # another agent's trials, b searched there
    assert next_runs(config, other, seed=0, pins={"b": 0}) == []
