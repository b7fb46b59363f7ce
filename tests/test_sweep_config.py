"""Sweep config: W&B validation (exit 2, W&B's messages), every distribution parsed and sampled as W&B does."""
import math

import numpy as np
import pytest
import sweeps
import yaml
from fake_programs.sweep_helpers import sweep_cli, write_config
from sweeps.grid_search import grid_search_next_runs

import sweep
from bddseg.cli import UserError, run_cli
from bddseg.sweeper.config import load_config, validate
from bddseg.sweeper.space import Space, nest

N = 3000


def draws(spec, n=N, seed=0):
    """n W&B draws of one parameter, as the program would receive them."""
    p = Space({"p": spec})["p"]
    rng = np.random.default_rng(seed)
    return [p.from_record(p.sample(rng)) for _ in range(n)]


def is_multiple(v, q):
    return abs(v / q - round(v / q)) < 1e-6


E = math.e
BOUNDS = {  # spec -> (low, high, integer?) computed from W&B's definitions, not from our code
    "int_uniform": ({"distribution": "int_uniform", "min": -3, "max": 4}, -3, 4, True),
    "uniform": ({"distribution": "uniform", "min": 0.5, "max": 2.5}, 0.5, 2.5, False),
    "q_uniform": ({"distribution": "q_uniform", "min": 0, "max": 12, "q": 3}, 0, 12, True),
    "log_uniform": ({"distribution": "log_uniform", "min": -6, "max": -1}, E ** -6, E ** -1, False),
    "log_uniform_values": ({"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2}, 1e-5, 1e-2, False),
    "q_log_uniform": ({"distribution": "q_log_uniform", "min": 1, "max": 4, "q": 2}, 2, 54, True),
    "q_log_uniform_values": ({"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 16}, 16, 256, True),
    "inv_log_uniform": ({"distribution": "inv_log_uniform", "min": 1, "max": 4}, E ** -4, E ** -1, False),
    "inv_log_uniform_values": ({"distribution": "inv_log_uniform_values", "min": 0.01, "max": 0.5}, 0.01, 0.5, False),
    "normal": ({"distribution": "normal", "mu": 3.0, "sigma": 0.5}, 3.0 - 6 * 0.5, 3.0 + 6 * 0.5, False),
    "q_normal": ({"distribution": "q_normal", "mu": 10, "sigma": 2, "q": 2}, -2, 22, True),
    "log_normal": ({"distribution": "log_normal", "mu": 0.0, "sigma": 0.5}, E ** -3, E ** 3, False),
    "q_log_normal": ({"distribution": "q_log_normal", "mu": 3.0, "sigma": 0.3, "q": 1}, 3, 121, True),
    "beta": ({"distribution": "beta", "a": 2, "b": 5}, 0.0, 1.0, False),
    "inferred int": ({"min": 1, "max": 4}, 1, 4, True),
    "inferred float": ({"min": 0.1, "max": 0.4}, 0.1, 0.4, False),
}


@pytest.mark.parametrize("name", list(BOUNDS))
def test_every_distribution_samples_inside_its_bounds(name):
    spec, low, high, integer = BOUNDS[name]
    values = draws(spec)
    assert all(low - 1e-9 <= v <= high + 1e-9 for v in values), (min(values), max(values))
    assert all(isinstance(v, int) for v in values) == integer
    if "q" in spec:
        assert all(is_multiple(v, spec["q"]) for v in values)
    assert len(set(values)) > 3  # it really varies


def test_log_distributions_are_uniform_in_log_space():
    for spec in (BOUNDS["log_uniform_values"][0], BOUNDS["log_uniform"][0], BOUNDS["inv_log_uniform_values"][0]):
        logs = np.log(draws(spec))
        lo, hi = logs.min(), logs.max()
        counts, _ = np.histogram(logs, bins=5, range=(lo, hi))
        assert counts.min() > 0.8 * N / 5, (spec, counts)  # flat in log space (linear-uniform would pile up at the top)
    lr = np.array(draws(BOUNDS["log_uniform_values"][0]))
    assert abs((lr < 10 ** -3.5).mean() - 0.5) < 0.04  # half below the geometric middle


def test_normal_families_have_their_mean_and_spread():
    n = np.array(draws(BOUNDS["normal"][0]))
    assert abs(n.mean() - 3.0) < 0.05 and abs(n.std() - 0.5) < 0.05
    ln = np.log(draws(BOUNDS["log_normal"][0]))
    assert abs(ln.mean()) < 0.05 and abs(ln.std() - 0.5) < 0.05


def test_q_uniform_reaches_every_multiple_and_rounds_like_wandb():
    values = draws({"distribution": "q_uniform", "min": 0, "max": 12, "q": 3})
    assert set(values) == {0, 3, 6, 9, 12}
    counts = {v: values.count(v) for v in set(values)}
    assert counts[0] < 0.7 * counts[6] and counts[12] < 0.7 * counts[6]  # end points get half-width bins (rounding)


def test_probabilities_are_honoured():
    values = draws({"values": ["a", "b", "c"], "probabilities": [0.6, 0.3, 0.1]})
    for v, p in zip("abc", (0.6, 0.3, 0.1)):
        assert abs(values.count(v) / N - p) < 0.03


def test_categoricals_keep_any_value_type():
    values = draws({"values": [[1, 2], {"k": "v"}, "s", None, True]}, n=300)
    assert {repr(v) for v in values} == {repr(v) for v in ([1, 2], {"k": "v"}, "s", None, True)}


def test_constant_and_nested_parameters():
    space = Space({"epochs": {"value": 3},
                   "opt": {"parameters": {"lr": {"min": 0.1, "max": 0.2},
                                          "beta": {"parameters": {"b1": {"values": [0.9, 0.95]}}}}}})
    assert set(space.searched) == {"opt/lr", "opt/beta/b1"}
    assert space.constants() == {"epochs": 3}
    rng = np.random.default_rng(1)
    sampled = {n: p.from_record(p.sample(rng)) for n, p in space.searched.items()}
    config = space.config(sampled, pinned={"epochs": 1})
    assert config["epochs"] == 1 and 0.1 <= config["opt"]["lr"] <= 0.2 and config["opt"]["beta"]["b1"] in (0.9, 0.95)
    assert nest({"a/b": 1, "c": 2}) == {"a": {"b": 1}, "c": 2}


def test_grid_cells_are_wandbs_grid():
    parameters = {"a": {"values": [1, 2, 3]}, "b": {"distribution": "int_uniform", "min": 0, "max": 2},
                  "c": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25}, "d": {"value": "x"},
                  "n": {"parameters": {"k": {"values": ["u", "v"]}}}}
    space = Space(parameters, grid=True)
    ours = [{n: space[n].from_record(v) for n, v in cell.items()} for cell in space.grid_cells()]
    runs = grid_search_next_runs([], {"method": "grid", "parameters": parameters}, n=1000)
    theirs = [{"a": r.config["a"]["value"], "b": r.config["b"]["value"], "c": r.config["c"]["value"],
               "n/k": r.config["n"]["value"]["k"]} for r in runs if r is not None]
    assert len(ours) == 3 * 3 * 4 * 2 == len(theirs)
    assert sorted(map(repr, ours)) == sorted(map(repr, theirs))


# ---------------------------------------------------------------- validation
BASE = {"program": "train.py", "method": "random", "metric": {"name": "miou", "goal": "maximize"},
        "parameters": {"lr": {"min": 0.001, "max": 0.1}}}
INVALID = {  # case -> (change to BASE, part of the expected message)
    "unknown method": ({"method": "hyperopt"}, "'hyperopt' is not one of"),
    "min > max": ({"parameters": {"lr": {"min": 0.1, "max": 0.001}}}, "min 0.1 is not less than max 0.001"),
    "bad distribution": ({"parameters": {"lr": {"distribution": "gaussian", "min": 0.1, "max": 1.0}}},
                         "is not valid under any of the given schemas"),
    "grid over a continuous range": ({"method": "grid"}, "Parameter lr is a disallowed type with grid search"),
    "probabilities not summing to 1": ({"parameters": {"a": {"values": [1, 2], "probabilities": [0.5, 0.6]}}},
                                       "do not sum to 1"),
    "nested min > max": ({"parameters": {"o": {"parameters": {"lr": {"min": 2.0, "max": 1.0}}}}},
                         "min 2.0 is not less than max 1.0"),
    "bad goal": ({"metric": {"name": "miou", "goal": "maximise"}}, "'maximise' is not one of"),
    "run_cap not positive": ({"run_cap": 0}, "run_cap: 0 is not a positive integer"),
    "strict not boolean": ({"early_terminate": {"type": "hyperband", "min_iter": 1, "strict": "yes"}},
                           "early_terminate.strict"),
    "hyperband without bands": ({"early_terminate": {"type": "hyperband", "max_iter": 2, "s": 1, "eta": 3}},
                                "Bands must be an array of length at least 1"),
    "custom method": ({"method": "custom"}, "needs a W&B server controller"),
    "no metric": ({"metric": None}, "metric: missing"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_configs_are_refused_with_wandbs_message(case):
    change, message = INVALID[case]
    config = {**BASE, **change}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(UserError) as e:
        validate(config, source="s.yaml")
    assert message in str(e.value) and "s.yaml" in str(e.value)


def test_invalid_config_exits_2_before_anything_runs(tmp_path):
    path = write_config(tmp_path / "bad.yaml", {"x": {"min": 1.0, "max": 0.5}}, method="random")
    r = sweep_cli([path, "--count", "1"], tmp_path)  # the real command line, combined form
    assert r.returncode == 2, r.stdout + r.stderr
    assert "error:" in r.stderr and "min 1.0 is not less than max 0.5" in r.stderr
    assert not (tmp_path / "sweeps_db").exists()  # no storage, no trial


@pytest.mark.parametrize("name, text", [("missing.yaml", None), ("broken.yaml", "method: [random\n"),
                                        ("bad.yaml", "method: random\nparameters: {}\n")])
def test_bad_files_exit_2_from_create(tmp_path, capsys, name, text):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as e:
        run_cli(sweep.main, ["--storage", str(tmp_path / "j.journal"), "create", str(tmp_path / name)])
    assert e.value.code == 2 and name in capsys.readouterr().err
    assert not (tmp_path / "j.journal").exists()


def test_documented_extras_and_defaults(capsys):
    config = validate({**BASE, "run_cap": 5,
                       "early_terminate": {"type": "hyperband", "min_iter": 2, "strict": True},
                       "parameters": {"lr": {"distribution": "log_uniform", "min": -9, "max": -4}}})
    assert config["run_cap"] == 5 and config["early_terminate"] == {"type": "hyperband", "min_iter": 2,
                                                                  "eta": 3, "strict": True}
    assert "uses log_uniform, where min/max specify base-e exponents" in capsys.readouterr().err  # W&B's warning
    assert validate({k: v for k, v in BASE.items() if k != "metric"} | {"metric": {"name": "loss"}})["metric"]["goal"] \
        == "minimize"




def train_flags() -> set:
    """train.py's flag names (imported here: fastai's import time is only paid by this test)."""
    import train
    return set(vars(train.parse_args([])))


def test_project_sweep_files():
    main = load_config("sweep.yaml")
    assert main["program"] == "train.py" and main["method"] == "random"
    assert main["metric"] == {"name": "miou", "goal": "maximize", "impute": "worst"}
    assert main["parameters"]["lr"] == {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2}
    assert main["parameters"]["batch_size"]["values"] == [4, 8] and "img_size" in main["parameters"]
    archs = main["parameters"]["arch"]["values"]
    assert len(archs) >= 4 and any(a.startswith("timm/") for a in archs)
    assert main["early_terminate"]["type"] == "hyperband"
    person = load_config("sweep_person.yaml")
    assert person["method"] == "bayes" and person["metric"]["name"] == "person_iou"
    assert {"loss", "class_weights", "lr", "img_size", "crop", "focus", "time_budget"} <= set(person["parameters"])
    for config in (main, person):
        assert set(config["parameters"]) <= train_flags()
    for name in ("sweep.yaml", "sweep_person.yaml"):  # what `wandb sweep` checks: no schema violation at all
        assert sweeps.schema_violations_from_proposed_config(yaml.safe_load(open(name))) == []
    assert yaml.safe_load(open("sweep.yaml"))["parameters"]["augment"]["value"] is True


COURSE_YAML = """\
# the W&B course's sweep file, as written there: YAML 1.2 numbers, project and entity set
program: {program}
method: random
project: mlops-course-001
entity: av-team
name: 2024
metric:
  name: miou
  goal: maximize
parameters:
  lr:
    distribution: log_uniform_values
    min: 1e-5
    max: 1e-2
  batch_size:
    values: [4, 8]
  arch:
    values: ['resnet18', 'convnext_tiny', 'regnet_x_400mf']
  epochs:
    value: 2
"""


def test_yaml_12_numbers_are_numbers(tmp_path):
    from bddseg.sweeper.config import Yaml12Loader
    text = "a: 1e-5\nb: 3E+2\nc: .5e-3\nd: '1e-5'\ne: 1_000\nf: 1.2.3\ng: e5\nh: 2.5\ni: -1e3\n"
    assert yaml.load(text, Loader=Yaml12Loader) == {"a": 1e-5, "b": 300.0, "c": 5e-4, "d": "1e-5", "e": 1000,
                                                     "f": "1.2.3", "g": "e5", "h": 2.5, "i": -1000.0}


def test_course_sweep_file_runs_with_wandbs_warnings_only(tmp_path):
    from fake_programs.sweep_helpers import FAKE_TRAIN, trials
    path = tmp_path / "course.yaml"
    path.write_text(COURSE_YAML.format(program=FAKE_TRAIN))
    r = sweep_cli([path, "--count", "1", "--param", "epochs=1"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning:" in r.stderr and "Violation 1. 2024 is not of type 'string'" in r.stderr  # as `wandb sweep`
    sid = r.stdout.split("sweep ")[1].split()[0]
    (t,) = trials(tmp_path / "sweeps_db" / "sweeps.journal", sid)
    config = t.user_attrs["config"]
    assert t.state.name == "COMPLETE" and 1e-5 <= config["lr"] <= 1e-2 and isinstance(config["lr"], float)
    assert config["batch_size"] in (4, 8) and config["arch"] in ("resnet18", "convnext_tiny", "regnet_x_400mf")
    assert "WANDB_PROJECT=mlops-course-001" in open(t.user_attrs["log"]).read()
    assert load_config(path)["parameters"]["lr"]["min"] == 1e-5


def test_unknown_top_level_key_is_wandbs_warning_not_a_refusal(capsys):
    config = validate({**BASE, "epochs": 3}, source="s.yaml")  # `wandb sweep` warns and runs such a file
    assert config["method"] == "random"
    assert "Additional properties are not allowed ('epochs' was unexpected)" in capsys.readouterr().err
