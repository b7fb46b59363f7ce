"""Build a trial's argv from the sweep's `command` and its macros, exactly as `wandb agent` does (pure functions).

Differences from `wandb agent`, both deliberate: `${interpreter}` is the Python running the agent
(sys.executable, so a venv works without activating it) rather than the first `python` on PATH, and the result
is always an argv list (never a shell string).
"""
import json
import os
import re
import sys

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")  # the same pattern as wandb's agent


def arg_formats(config: dict) -> dict:
    """The argument lists W&B's macros expand to, for a run config {name: value} (nested values stay dicts)."""
    flags, no_hyphens, no_booleans, no_equals = [], [], [], []
    for name, value in config.items():
        flag = f"{name}={value}"
        flags.append(f"--{flag}")
        no_hyphens.append(flag)
        no_equals += [f"--{name}", str(value)]
        if isinstance(value, bool):
            if value:
                no_booleans.append(f"--{name}")
        else:
            no_booleans.append(f"--{flag}")
    return {"args": flags, "args_no_hyphens": no_hyphens, "args_no_boolean_flags": no_booleans,
            "args_no_equals": no_equals, "args_append_hydra": [f"+{f}" for f in no_hyphens],
            "args_override_hydra": [f"++{f}" for f in no_hyphens], "args_json": [json.dumps(config)]}


def expand_envvars(token: str, environ=None) -> str:
    """`${envvar:NAME}` anywhere in a token -> the variable's value (W&B leaves NAME when it is unset)."""
    environ = os.environ if environ is None else environ
    return ENVVAR.sub(lambda m: environ.get(m.group(1), m.group(1)), token)


def build_command(command, program, config: dict, args_json_file=None, interpreter=None, environ=None) -> list:
    """argv for one trial: whole-token macros expand to zero or more arguments, other tokens stay as they are."""
    macros = arg_formats(config)
    macros.update(env=[] if os.name == "nt" else ["/usr/bin/env"],
                  interpreter=[interpreter or sys.executable],
                  program=[str(program)] if program else [],
                  args_json_file=[str(args_json_file)] if args_json_file else [])
    argv = []
    for token in (command or DEFAULT_COMMAND):
        token = expand_envvars(str(token), environ)
        if token.startswith("${") and token.endswith("}"):
            argv += macros.get(token[2:-1]) or []
        else:
            argv.append(token)
    return argv


def unset_envvars(command, environ=None) -> list:
    """Names used as `${envvar:NAME}` in the command that are not set (W&B would pass NAME literally)."""
    environ = os.environ if environ is None else environ
    return [n for t in (command or []) for n in ENVVAR.findall(str(t)) if n not in environ]
