"""The offline agent: a thin loop over decide.py, the way `wandb agent` follows W&B's sweep controller.

Each turn: read the sweep's trials from the store (trials.plain) -> decide.next_runs -> claim that run in the
store (trials.claim) -> run the program (runner) -> record its metric lines; after each line decide.stop_runs
says whether early termination stops it. Stops after `count` trials, when decide says the sweep is done (grid
finished, `metric.target` reached, `run_cap`), or after `max_failures` failed trials in a row. Prints one
line per trial and the running best.
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

import optuna

from bddseg import config as project
from bddseg.cli import UserError

from . import decide, runner, trials, workers
from . import storage as st
from .command import build_command, unset_envvars
from .space import Space
from .study import best, load_sweep

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
    return Path(project.SWEEPS_DIR) / "runs" / sweep_id / f"trial-{number:04d}"


class TrialRun:
    """Runs one claimed trial's program and records what happened on the trial."""

    def __init__(self, study, claim, params, config, space, pins, kill_delay, verbose, live=None):
        self.study, self.claim, self.config, self.space = study, claim, config, space
        self.pins, self.kill_delay, self.verbose, self.live = pins, kill_delay, verbose, live
        self.sampled = {k: v for k, v in params.items() if k not in pins}  # pinned parameters are not searched
        self.metric = config["metric"]["name"]
        self.history, self.last, self.lines, self.run_dir = [], None, 0, None

    def prepare(self) -> list:
        """Write the args file, store config/command on the trial; returns argv."""
        run_config = self.space.config(self.sampled, self.pins)
        self.dir = trial_dir(self.study.study_name, self.claim.number)
        self.dir.mkdir(parents=True, exist_ok=True)
        args_file = self.dir / "args.json"
        args_file.write_text(json.dumps(run_config))
        argv = build_command(self.config.get("command"), self.config.get("program"), run_config, args_file)
        flat = {**self.space.constants(), **self.sampled, **self.pins}
        self.claim.set(config=run_config, flat=flat, pinned=self.pins, argv=argv, command=shlex.join(argv),
                       agent=st.agent_tag(), log=str(self.dir / "output.log"), **workers.worker_placement())
        self.claim.beat()
        return argv

    def on_line(self, line: dict) -> bool:
        """One metric line: remember run_dir, report the metric, True when early termination stops the trial."""
        self.lines += 1
        self.last = line
        if line.get("run_dir") and line["run_dir"] != self.run_dir:
            self.run_dir = line["run_dir"]
            self.claim.set(run_dir=str(self.run_dir))
        v = line.get(self.metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        self.history.append(float(v))
        self.claim.report(len(self.history) - 1, float(v))
        if self.live:  # a terminal: one transient status line, replaced by the trial's result line
            self.live.write(f"\r\033[K  trial {self.claim.number} running: {len(self.history)} report(s), "
                            f"{self.metric}={fmt(v)}")
            self.live.flush()
        return self.should_stop()

    def should_stop(self) -> bool:
        """decide.stop_runs on the sweep's trials as they are now names this trial."""
        if not self.config.get("early_terminate"):
            return False
        return self.claim.number in decide.stop_runs(self.config, trials.plain(self.study, self.space))

    def run(self):
        """Run the program; returns (state, value, runner.Outcome)."""
        argv = self.prepare()
        if self.live:
            self.live.write(f"  trial {self.claim.number} running ...")
            self.live.flush()
        outcome = runner.run(argv, child_env(self.config, self.study.study_name, self.claim.number),
                             self.dir / "output.log", self.dir / "metrics.jsonl", self.on_line,
                             beat=self.claim.beat, interval=st.heartbeat_interval(), kill_delay=self.kill_delay,
                             echo=sys.stdout if self.verbose else None)
        if self.last is not None:
            self.claim.set(metrics=self.last)
        if outcome.state == "stopped":
            self.claim.finish("stopped")
            return "PRUNED", (self.history or [None])[-1], outcome
        if outcome.state == "finished" and self.history:
            self.claim.finish("finished", self.history[-1])
            return "COMPLETE", self.history[-1], outcome
        if outcome.state == "finished":
            outcome.error = (f"no finite `{self.metric}` in its metric lines ({self.lines} read from "
                             f"$SWEEP_METRICS_FILE)")
        self.claim.set(error=outcome.error, log_tail=outcome.log_tail)
        self.claim.finish("failed")
        return "FAIL", None, outcome

    def interrupted(self):
        """The agent is stopping mid-trial: fail the trial and queue its params again for the next agent."""
        try:
            self.claim.set(error="interrupted (agent stopped)")
            self.claim.requeue()
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


def take(study, config: dict, space, pins: dict):
    """(claim, params, None) for the run this agent does next, or (None, None, why) when it is done."""
    while True:
        with st.claim_lock(study._storage, study.study_name):  # agents take turns: read, decide, claim
            plain = trials.plain(study, space)
            runs = decide.next_runs(config, plain, pins=pins)
            if not runs:
                return None, None, decide.why_done(config, plain, pins) or "no new trials"
            claim = trials.claim(study, space, runs[0], plain, pins, config.get("run_cap"))
            if claim is not None:  # whose it is, and a first beat, at once: a stop right now cannot orphan it
                claim.set(agent=st.agent_tag())
                claim.beat()
        if claim is not None:
            return claim, runs[0], None
        # another agent took that queued trial, or the last run under run_cap, first: read the trials again


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
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the agent prints its own line per trial
    label = workers.label()  # a worker of `--gpus`: its lines name its GPU, and no transient line is drawn
    say = lambda text: print(f"[{label}] {text}" if label else text, file=out, flush=True)  # noqa: E731
    live = out if not (verbose or label) and hasattr(out, "isatty") and out.isatty() else None
    storage = st.get_storage(storage) if storage is None or isinstance(storage, (str, Path)) else storage
    study, config = load_sweep(ref, storage)
    space = Space(config["parameters"], grid=config["method"] == "grid")
    pins, metric = dict(pins or {}), config["metric"]["name"]
    check_program(config)
    announce(say, study, config, space, storage, pins)
    done = failures = 0
    with sigterm_as_interrupt():
        while count is None or done < count:
            for number in st.fail_dead_trials(study):
                say(f"trial {number:>3}  FAIL      its agent is gone; queued again for the next agent")
            claim, params, why = take(study, config, space, pins)
            if claim is None:
                say(why)
                break
            job = TrialRun(study, claim, params, config, space, pins, kill_delay, verbose, live)
            try:
                state, value, outcome = job.run()
            except KeyboardInterrupt:
                job.interrupted()
                say(f"trial {claim.number:>3}  FAIL      interrupted; queued again for the next agent")
                return 130
            done += 1
            line = progress(claim.number, state, value, metric, outcome.duration, job.sampled, best(study))
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

