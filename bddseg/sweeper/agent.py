"""The offline agent loop: take a trial, run the program with its params, report metric lines, record the result.

Stops after `count` trials, when the grid is done, when `metric.target` is reached, at `run_cap`, or after
`max_failures` failed trials in a row. Prints one line per trial and the running best.
"""
import json
import math
import os
import shlex
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from optuna.pruners import NopPruner
from optuna.trial import TrialState

import params
from utils import UserError

from . import runner
from . import storage as st
from .command import build_command, unset_envvars
from .hyperband import HyperbandPruner
from .space import Space
from .study import best, load_sweep
from .suggest import is_retry, make_sampler, next_trial, suggest

MAX_FAILURES = 5  # as wandb agent's default for failed runs in a row


def parse_value(text: str):
    """A --param value as YAML would read it, plus 1e-3 style floats: int, float, bool, null or string."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return None if low in ("none", "null") else text


def parse_pins(items) -> dict:
    """['epochs=1', 'opt/lr=0.1'] -> {'epochs': 1, 'opt/lr': 0.1}; nested names use '/'."""
    pins = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param {item!r}: expected KEY=VALUE, e.g. --param epochs=1")
        pins[key.strip()] = parse_value(value.strip())
    return pins


def fmt(v) -> str:
    """A parameter or metric value, short."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fmt_duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def make_pruner(config: dict):
    """W&B hyperband as an Optuna pruner, or no pruning."""
    if config.get("early_terminate", {}).get("type") == "hyperband":
        return HyperbandPruner(config["early_terminate"], config["metric"].get("goal") == "maximize")
    return NopPruner()


def target_reached(study, config: dict):
    """Number of a trial that reported a value reaching metric.target (None when none did or no target)."""
    target = config["metric"].get("target")
    if target is None:
        return None
    maximize = config["metric"].get("goal") == "maximize"
    for t in study.get_trials(deepcopy=False):
        values = list(t.intermediate_values.values()) + ([t.value] if t.state == TrialState.COMPLETE else [])
        if any(v is not None and math.isfinite(v) and (v >= target if maximize else v <= target) for v in values):
            return t.number
    return None


def started_count(study) -> int:
    """First-attempt trials that ran or run (what run_cap counts)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state != TrialState.WAITING and not is_retry(t) and "skipped" not in t.user_attrs)


def child_env(config: dict, sweep_id: str, number: int) -> dict:
    """The program's environment: the agent's, plus the sweep's W&B project/entity and a run group."""
    env = dict(os.environ, BDDSEG_SWEEP_ID=sweep_id, BDDSEG_SWEEP_TRIAL=str(number))
    env.setdefault("WANDB_RUN_GROUP", f"sweep-{sweep_id}")
    for key, var in (("project", "WANDB_PROJECT"), ("entity", "WANDB_ENTITY")):
        if config.get(key):
            env[var] = str(config[key])
    return env


def trial_dir(sweep_id: str, number: int) -> Path:
    """Local folder of one trial's log, metric lines and args file."""
    return Path(params.SWEEPS_DIR) / "runs" / sweep_id / f"trial-{number:04d}"


class TrialRun:
    """Runs one Optuna trial's program and records what happened on the trial."""

    def __init__(self, study, trial, config, space, pins, kill_delay, verbose, live=None):
        self.study, self.trial, self.config, self.space = study, trial, config, space
        self.pins, self.kill_delay, self.verbose, self.live = pins, kill_delay, verbose, live
        self.metric = config["metric"]["name"]
        self.history, self.last, self.lines = [], None, 0

    def prepare(self) -> list:
        """Sample params, write the args file, store config/command on the trial; returns argv."""
        t = self.trial
        self.sampled = suggest(t, self.space, skip=self.pins)
        run_config = self.space.config(self.sampled, self.pins)
        self.dir = trial_dir(self.study.study_name, t.number)
        self.dir.mkdir(parents=True, exist_ok=True)
        args_file = self.dir / "args.json"
        args_file.write_text(json.dumps(run_config))
        argv = build_command(self.config.get("command"), self.config.get("program"), run_config, args_file)
        flat = {**self.space.constants(), **self.sampled, **self.pins}
        attrs = {"config": run_config, "flat": flat, "pinned": self.pins, "argv": argv,
                 "command": shlex.join(argv), "agent": st.agent_tag(), "log": str(self.dir / "output.log")}
        for key, value in attrs.items():
            t.set_user_attr(key, value)
        st.record_heartbeat(self.study._storage, t._trial_id)
        return argv

    def on_line(self, line: dict) -> bool:
        """One metric line: remember run_dir, report the metric, True when hyperband says stop."""
        self.lines += 1
        self.last = line
        if line.get("run_dir") and line["run_dir"] != self.trial.user_attrs.get("run_dir"):
            self.trial.set_user_attr("run_dir", str(line["run_dir"]))
        v = line.get(self.metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        self.history.append(float(v))
        self.trial.report(float(v), len(self.history) - 1)
        if self.live:  # a terminal: one transient status line, replaced by the trial's result line
            self.live.write(f"\r\033[K  trial {self.trial.number} running: {len(self.history)} report(s), "
                            f"{self.metric}={fmt(v)}")
            self.live.flush()
        return self.trial.should_prune()

    def run(self):
        """Run the program; returns (state, value, runner.Outcome)."""
        argv = self.prepare()
        storage = self.study._storage
        if self.live:
            self.live.write(f"  trial {self.trial.number} running ...")
            self.live.flush()
        outcome = runner.run(argv, child_env(self.config, self.study.study_name, self.trial.number),
                             self.dir / "output.log", self.dir / "metrics.jsonl", self.on_line,
                             beat=lambda: st.record_heartbeat(storage, self.trial._trial_id),
                             interval=st.heartbeat_interval(), kill_delay=self.kill_delay,
                             echo=sys.stdout if self.verbose else None)
        if self.last is not None:
            self.trial.set_user_attr("metrics", self.last)
        if outcome.state == "stopped":
            self.study.tell(self.trial, state=TrialState.PRUNED)
            return "PRUNED", (self.history or [None])[-1], outcome
        if outcome.state == "finished" and self.history:
            self.study.tell(self.trial, self.history[-1])
            return "COMPLETE", self.history[-1], outcome
        if outcome.state == "finished":
            outcome.error = (f"no finite `{self.metric}` in its metric lines ({self.lines} read from "
                             f"$SWEEP_METRICS_FILE)")
        self.trial.set_user_attr("error", outcome.error)
        self.trial.set_user_attr("log_tail", outcome.log_tail)
        self.study.tell(self.trial, state=TrialState.FAIL)
        return "FAIL", None, outcome

    def interrupted(self):
        """The agent is stopping mid-trial: fail the trial and queue its params again for the next agent."""
        try:
            self.trial.set_user_attr("error", "interrupted (agent stopped)")
            self.study.tell(self.trial, state=TrialState.FAIL)
            st.retry_callback()(self.study, self.study._storage.get_trial(self.trial._trial_id))
        except Exception:
            pass


@contextmanager
def sigterm_as_interrupt():
    """`kill AGENT_PID` stops the agent like Ctrl-C does (its trial is stopped and queued again)."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, handler) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def progress(number, state, value, metric, duration, sampled, best_trial) -> str:
    """One line per trial: number, state, metric, duration, params, running best."""
    shown = f"{metric}={fmt(value)}" if value is not None else f"{metric}=-"
    params_text = " ".join(f"{k}={fmt(v)}" for k, v in sampled.items())
    best_text = f"best {metric}={fmt(best_trial.value)} (trial {best_trial.number})" if best_trial else "best -"
    return f"trial {number:>3}  {state:<8}  {shown:<16} {fmt_duration(duration):>7}  {params_text}  | {best_text}"


def stop_reason(study, config: dict):
    """Why no new trial may start (target reached, run_cap reached), or None."""
    metric, run_cap = config["metric"], config.get("run_cap")
    hit = target_reached(study, config)
    if hit is not None:
        return f"target {metric['name']}={metric['target']} reached by trial {hit}: no new trials"
    if run_cap and started_count(study) >= run_cap:
        return f"run_cap {run_cap} reached: no new trials"
    return None


def take_trial(study, config: dict):
    """(trial, None) for the next trial to run, or (None, why) when this agent is done."""
    run_cap = config.get("run_cap")
    trial, within = next_trial(study, config["method"], run_cap)
    if trial is None:
        return None, stop_reason(study, config) or "grid finished: every combination has run or is running"
    if not within:  # another agent created the last allowed trial first
        trial.set_user_attr("skipped", "run_cap reached by other agents")
        study.tell(trial, state=TrialState.FAIL)
        return None, f"run_cap {run_cap} reached: no new trials"
    return trial, None


def describe_failure(outcome, job) -> list:
    """Lines shown under a failed trial: the error, where its log is, the log's last lines."""
    lines = [f"      error: {outcome.error}; log: {job.dir / 'output.log'}"]
    return lines + [f"      | {line}" for line in (outcome.log_tail or "").splitlines()[-10:]]


def announce(say, study, config, space, storage, pins):
    """The agent's first lines: sweep, method, metric, storage, pins."""
    say(f"agent {st.agent_tag()} on sweep {study.study_name} ({config.get('name') or 'unnamed'}): "
        f"{config['method']}, {config['metric'].get('goal', 'minimize')} {config['metric']['name']}; "
        f"storage {st.describe(storage)}")
    for name in unset_envvars(config.get("command")):
        say(f"warning: ${{envvar:{name}}} is not set; it expands to {name!r} as in wandb agent")
    if pins:
        extra = [k for k in pins if k not in space]
        say("pinned for this agent: " + " ".join(f"{k}={fmt(v)}" for k, v in pins.items())
            + (f"  (not in the sweep's parameters: {', '.join(extra)})" if extra else ""))
        if config["method"] == "grid" and set(pins) & set(space.searched):
            say("warning: pinned grid parameters run every grid cell with the pinned value")


def run_agent(ref, storage=None, count=None, pins=None, max_failures=MAX_FAILURES,
              kill_delay=runner.KILL_DELAY, verbose=False, out=None) -> int:
    """Run trials of a sweep until one of the stop conditions; returns the exit code (0, 1 on failures, 130)."""
    out = out or sys.stdout
    say = lambda text: print(text, file=out, flush=True)  # noqa: E731
    live = out if not verbose and hasattr(out, "isatty") and out.isatty() else None
    storage = st.get_storage(storage) if storage is None or isinstance(storage, (str, Path)) else storage
    study, config = load_sweep(ref, storage)
    space = Space(config["parameters"], grid=config["method"] == "grid")
    study.sampler, study.pruner = make_sampler(config["method"], space), make_pruner(config)
    pins, metric = dict(pins or {}), config["metric"]["name"]
    check_program(config)
    announce(say, study, config, space, storage, pins)
    done = failures = 0
    with sigterm_as_interrupt():
        while count is None or done < count:
            for number in st.fail_dead_trials(study):
                say(f"trial {number:>3}  FAIL      its agent is gone; queued again for the next agent")
            trial, why = None, stop_reason(study, config)
            if why is None:
                trial, why = take_trial(study, config)
            if trial is None:
                say(why)
                break
            job = TrialRun(study, trial, config, space, pins, kill_delay, verbose, live)
            try:
                state, value, outcome = job.run()
            except KeyboardInterrupt:
                job.interrupted()
                say(f"trial {trial.number:>3}  FAIL      interrupted; queued again for the next agent")
                return 130
            done += 1
            line = progress(trial.number, state, value, metric, outcome.duration, job.sampled, best(study))
            say(("\r\033[K" if live else "") + line)
            failures = failures + 1 if state == "FAIL" else 0
            if state == "FAIL":
                for text in describe_failure(outcome, job):
                    say(text)
            if failures >= max_failures:
                say(f"stopping: {failures} trials failed in a row (--max-consecutive-failures {max_failures})")
                return 1
    b = best(study)
    say(f"agent done: {done} trial(s) run here; sweep best {metric}="
        + (f"{fmt(b.value)} (trial {b.number})" if b else "-") + f". Report: python sweep.py report {study.study_name}")
    return 0


def check_program(config: dict) -> None:
    """Refuse early when the program the command needs is missing (paths are relative to the agent's folder)."""
    command = config.get("command")
    uses_program = command is None or "${program}" in [str(c) for c in command]
    program = config.get("program")
    if uses_program and program and not Path(program).exists():
        raise UserError(f"program {program!r} not found relative to {Path.cwd()} (run the agent from the "
                        f"folder the sweep's paths are relative to, as with wandb agent)")

