"""Load and validate a W&B sweep config with W&B's own schema (the `sweeps` package), before anything runs.

W&B's server accepts a few documented keys that the `sweeps` 0.2.0 schema lacks (`run_cap`, hyperband's
`strict`); they are checked here and the rest goes through the schema, so messages are W&B's own. The
base-e `log_uniform` family is deprecated by W&B (a warning there, and here), not refused.
"""
import copy
import sys
import warnings
from pathlib import Path

import yaml

from bddseg.cli import UserError

from . import decide
from .command import DEFAULT_COMMAND
from .space import Space

with warnings.catch_warnings():  # pydantic 2 notes the `sweeps` models' v1-style config when they are defined
    warnings.filterwarnings("ignore", message="Valid config keys have changed in V2")
    import sweeps
    from sweeps.config.schema import fill_validate_early_terminate, fill_validate_metric
    from sweeps.grid_search import grid_search_next_runs
    from sweeps.params import PARAM_DEPRECATION_MAP

METHODS = ("grid", "random", "bayes")


def load_config(path) -> dict:
    """Read a sweep YAML file and return the validated, default-filled config (UserError -> exit 2)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such sweep config file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    return validate(config, source=str(path))


def _schema_messages(config: dict) -> tuple:
    """(errors, warnings) from W&B's schema; the deprecated base-e log distributions are warnings, as in W&B."""
    try:
        messages = sweeps.schema_violations_from_proposed_config(config)
    except ValueError as e:  # sweeps raises for non-dict configs and non-dict parameter specs
        return [str(e)], []
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


def _agent_rules(config: dict) -> list:
    """What the offline agent needs beyond W&B's schema (method it can run, a metric, a program, grid types)."""
    errors = []
    if config["method"] not in METHODS:
        errors.append(f"method: {config['method']!r} needs a W&B server controller; the offline agent runs "
                      f"{', '.join(METHODS)}")
    if "metric" not in config:
        errors.append("metric: missing; the offline agent records each trial's `metric.name` value")
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


def validate(config, source: str = "sweep config") -> dict:
    """W&B schema + the agent's rules; returns the config with W&B's defaults filled (goal, eta, ...)."""
    if not isinstance(config, dict):
        raise UserError(f"{source}: invalid sweep config: expected a mapping of sweep keys, "
                        f"got {type(config).__name__}")
    config = copy.deepcopy(config)
    run_cap, strict, errors = _extra_keys(config)
    schema_errors, deprecations = _schema_messages(config)
    errors += schema_errors
    if not errors:
        errors += _agent_rules(config)
    if errors:
        raise UserError(f"{source}: invalid sweep config (W&B sweep schema):\n  " + "\n  ".join(errors))
    for message in deprecations:
        print(f"warning: {source}: {message}", file=sys.stderr)
    config = fill_validate_metric(config)
    if "early_terminate" in config:
        config = fill_validate_early_terminate(config)
        if strict is not None:
            config["early_terminate"]["strict"] = strict
    if run_cap is not None:
        config["run_cap"] = run_cap
    return config
