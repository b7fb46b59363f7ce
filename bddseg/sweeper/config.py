"""Load and validate a W&B sweep config with W&B's own schema (the `sweeps` package), before anything runs.

Accept what W&B accepts: files are read as YAML 1.2 reads numbers (`1e-5` is a float, not PyYAML's string),
and W&B's schema violations are printed as warnings, as `wandb sweep` does (handle_sweep_config_violations).
Refused (exit 2, with W&B's messages) is only what the offline agent cannot run: an unknown method, no metric,
a parameter it cannot sample, a bad hyperband. An unknown top-level key is only W&B's schema warning.
W&B's server accepts a few documented keys that the `sweeps` 0.2.0 schema lacks (`run_cap`, hyperband's
`strict`); they are checked here. The base-e `log_uniform` family is deprecated by W&B (a warning), not refused.
"""
import copy
import re
import sys
import warnings
from pathlib import Path

import yaml

from bddseg.cli import UserError

from . import decide
from .command import DEFAULT_COMMAND
from .space import Space, flatten

with warnings.catch_warnings():  # pydantic 2 notes the `sweeps` models' v1-style config when they are defined
    warnings.filterwarnings("ignore", message="Valid config keys have changed in V2")
    import sweeps
    from sweeps.config.schema import fill_validate_early_terminate, fill_validate_metric
    from sweeps.grid_search import grid_search_next_runs
    from sweeps.params import PARAM_DEPRECATION_MAP

METHODS = ("grid", "random", "bayes")
FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats without a dot (`1e-5`, `3E+2`), which YAML 1.1 leaves strings."""


Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_12, list("-+.0123456789"))


def load_config(path) -> dict:
    """Read a sweep YAML file and return the validated, default-filled config (UserError -> exit 2)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such sweep config file")
    try:
        config = yaml.load(path.read_text(), Loader=Yaml12Loader)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    return validate(config, source=str(path))


def _schema_messages(config: dict) -> tuple:
    """(errors, warnings) from W&B's schema; the deprecated base-e log distributions are warnings, as in W&B."""
    try:
        messages = sweeps.schema_violations_from_proposed_config(config)
    except (ValueError, TypeError, KeyError) as e:  # sweeps raises for non-dict parameter specs, str vs number
        return [f"{type(e).__name__}: {e}"], []
    deprecations = tuple(PARAM_DEPRECATION_MAP.values())
    errors = [m for m in messages if not m.endswith(deprecations)]
    return errors, [m for m in messages if m.endswith(deprecations)]


def _extra_keys(config: dict) -> tuple:
    """Pop the keys W&B documents but sweeps 0.2.0's schema lacks; return (run_cap, strict, errors)."""
    errors = []
    run_cap = config.pop("run_cap", None)
    if run_cap is not None and (isinstance(run_cap, bool) or not isinstance(run_cap, int) or run_cap < 1):
        errors.append(f"run_cap: {run_cap!r} is not a positive integer")
    strict = None
    if isinstance(config.get("early_terminate"), dict):
        strict = config["early_terminate"].pop("strict", None)
        if strict is not None and not isinstance(strict, bool):
            errors.append(f"early_terminate.strict: {strict!r} is not of type 'boolean'")
    return run_cap, strict, errors


def _basics(config: dict) -> list:
    """Keys, method and metric the offline agent needs to run anything at all."""
    errors = []  # an unknown top-level key is only W&B's schema warning (`wandb sweep` runs such a file too)
    if config.get("method") not in METHODS:
        errors.append(f"method: {config.get('method')!r} needs a W&B server controller; the offline agent runs "
                      f"{', '.join(METHODS)}")
    metric = config.get("metric")
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        errors.append("metric: missing; the offline agent records each trial's `metric.name` value")
    elif metric.get("goal", "minimize") not in ("minimize", "maximize"):
        errors.append(f"metric.goal: {metric['goal']!r} is neither minimize nor maximize")
    if not isinstance(config.get("parameters"), dict) or not config["parameters"]:
        errors.append("parameters: missing or empty")
    return errors


def _probabilities(config: dict) -> list:
    """Categorical probabilities must sum to 1 (W&B's draw needs it), nested parameters included."""
    errors = []
    for name, spec in flatten(config["parameters"]).items():
        probs = spec.get("probabilities") if isinstance(spec, dict) else None
        if isinstance(probs, list) and abs(sum(probs) - 1) > 1e-6:
            errors.append(f"Parameter {name}: Probabilities {probs} do not sum to 1")
    return errors


def _agent_rules(config: dict) -> list:
    """What the offline agent needs to run the sweep (method, metric, a program, parameters it can sample)."""
    errors = _basics(config)
    if errors:
        return errors
    errors += _probabilities(config)
    command = [str(c) for c in config.get("command", DEFAULT_COMMAND)]
    if "${program}" in command and not config.get("program"):
        errors.append("program: missing, and `command` uses ${program}")
    if config["method"] == "grid":
        try:
            grid_search_next_runs([], {"method": "grid", "parameters": config["parameters"]})
        except (ValueError, AssertionError) as e:
            errors.append(str(e))
    try:
        Space(config["parameters"])  # every leaf, nested ones included (W&B's schema checks min < max at the top only)
    except Exception as e:  # jsonschema.ValidationError or ValueError with W&B's message
        errors.append(getattr(e, "message", None) or str(e))
    if "early_terminate" in config and not errors:
        try:
            decide.bands(config["early_terminate"])  # W&B's hyperband arithmetic, W&B's message
        except ValueError as e:
            errors.append(f"early_terminate: {e}")
    return errors


def warn_violations(source: str, messages: list) -> None:
    """W&B's schema violations as `wandb sweep` shows them: a warning, and the sweep goes on."""
    if messages:
        print(f"warning: {source}: malformed sweep config (W&B's schema); it runs as W&B would run it:\n"
              + "\n".join(f"  Violation {i}. {m}" for i, m in enumerate(messages, 1)), file=sys.stderr)


def with_defaults(config: dict, run_cap, strict) -> dict:
    """W&B's defaults filled in (goal, eta, ...), and the extra keys put back."""
    try:
        config = fill_validate_metric(config)
        if "early_terminate" in config:
            config = fill_validate_early_terminate(config)
    except Exception as e:  # jsonschema.ValidationError on a metric / early_terminate the agent cannot use
        raise UserError(f"invalid sweep config: {getattr(e, 'message', None) or e}") from None
    if strict is not None:
        config["early_terminate"]["strict"] = strict
    if run_cap is not None:
        config["run_cap"] = run_cap
    return config


def validate(config, source: str = "sweep config") -> dict:
    """The agent's rules (refused: exit 2) + W&B's schema (warnings); returns the config with W&B's defaults."""
    if not isinstance(config, dict):
        raise UserError(f"{source}: invalid sweep config: expected a mapping of sweep keys, "
                        f"got {type(config).__name__}")
    config = copy.deepcopy(config)
    run_cap, strict, errors = _extra_keys(config)
    schema, deprecations = _schema_messages(config)
    errors += _agent_rules(config)
    if errors:
        raise UserError(f"{source}: invalid sweep config, the offline agent cannot run it:\n  "
                        + "\n  ".join(errors + [f"W&B's schema: {m}" for m in schema]))
    warn_violations(source, schema)
    for message in deprecations:
        print(f"warning: {source}: {message}", file=sys.stderr)
    try:
        return with_defaults(config, run_cap, strict)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
