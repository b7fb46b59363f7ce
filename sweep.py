"""Offline W&B sweeps on Optuna: the same sweep.yaml that `wandb sweep` + `wandb agent` run online.

    python sweep.py create sweep.yaml                  # prints a sweep id
    python sweep.py agent ID --count 5                 # runs trials (any number of agents at once)
    python sweep.py sweep.yaml --count 5               # both: creates, or resumes the sweep of this file
    python sweep.py status [ID]                        # progress and best trial (all sweeps without ID)
    python sweep.py report ID                          # self-contained HTML report

`--storage PATH_OR_URL` picks the Optuna storage: default a journal file under sweeps_db/ that several local
agents share (or BDDSEG_SWEEP_STORAGE); a SQLAlchemy URL such as postgresql://user:password@host/db for agents on
several machines. `--param KEY=VALUE` (repeatable) pins a parameter for this agent, e.g. --param epochs=1.

Several GPUs, several machines:
    python sweep.py agent ID --gpus 0,1,2,3            # one worker per GPU (each trial sees only its GPU)
    python sweep.py agent ID --gpus all                # every GPU of this machine; --gpus cpu:4: 4 CPU workers
    sbatch --array=0-7 slurm/agent.sbatch ID           # SLURM: one agent per array task (see that file)
With --gpus, --count is per worker (as each `wandb agent` counts its own runs).

Extensions to W&B's sweep config, as options (not config keys: W&B's schema flags unknown keys):
    python sweep.py create grid.yaml --grid-order shuffled   # grid points in a seeded shuffled order
The seed comes from the config itself, so every agent (and a resumed combined form) sees the same order.
random and bayes never run one point twice (a repeat is drawn again; an all-categorical space ends when every
combination has run). run_cap and grid points are claimed atomically, also across machines.
"""
import argparse
import hashlib
import os
import sys

import optuna

from bddseg.cli import UserError, run_cli
from bddseg.sweeper import agent as agent_loop
from bddseg.sweeper import storage as st
from bddseg.sweeper import sweep_report, workers
from bddseg.sweeper.config import load_config
from bddseg.sweeper.study import best, config_id, create_sweep, list_sweeps, load_sweep, running, trials_frame

COMMANDS = ("create", "agent", "status", "report", "run")


def get_config(path, name=None, grid_order="wandb") -> dict:
    """Validated sweep config from a YAML file (exit 2 with W&B's schema message when invalid)."""
    config = load_config(path)
    if name:
        config["name"] = name
    if grid_order == "shuffled":
        if config["method"] != "grid":
            raise UserError(f"--grid-order shuffled: {path} is a {config['method']} sweep, not a grid")
        seed = int.from_bytes(hashlib.sha256(config_id(config).encode()).digest()[:4], "big")
        config.update(grid_order="shuffled", grid_seed=seed)
    return config


def create(args) -> str:
    """`create`: a new sweep from a config file; prints its id and how to start agents."""
    config = get_config(args.config, args.name, args.grid_order)
    storage = st.get_storage(args.storage)
    print(f"Creating sweep from: {args.config}")
    sid, _ = create_sweep(config, storage, source=args.config)
    print(f"Created sweep with ID: {sid}  (storage: {st.describe(storage)})")
    storage_arg = f" --storage {args.storage}" if args.storage else ""
    print(f"Run sweep agent with: python sweep.py agent {sid}{storage_arg}")
    return sid


def agent(args) -> int:
    """`agent`: run trials of an existing sweep (one worker process per GPU with --gpus)."""
    if args.gpus:
        return run_workers(args, args.sweep)
    return agent_loop.run_agent(args.sweep, args.storage, args.count, agent_loop.parse_pins(args.param),
                                args.max_consecutive_failures, args.kill_delay, args.verbose)


def worker_argv(args, sweep_id: str) -> list:
    """`sweep.py agent ID ...` with this command's agent options, without --gpus: what each worker runs."""
    argv = [sys.executable, os.path.abspath(__file__), "agent", sweep_id,
            "--max-consecutive-failures", str(args.max_consecutive_failures), "--kill-delay", str(args.kill_delay)]
    if args.storage:
        argv += ["--storage", str(args.storage)]
    if args.count:
        argv += ["--count", str(args.count)]
    argv += [a for item in args.param or [] for a in ("--param", item)]
    return argv + (["--verbose"] if args.verbose else [])


def run_workers(args, sweep_id: str) -> int:
    """One agent process per GPU (or CPU share) of --gpus, all on this sweep."""
    chosen = workers.parse_gpus(args.gpus)
    storage = st.get_storage(args.storage)
    study, _ = load_sweep(sweep_id, storage)  # a wrong id fails here once, not in every worker
    return workers.run_workers(chosen, worker_argv(args, study.study_name))


def run(args) -> int:
    """Combined form: create the sweep of this config (or resume it: same config -> same id), then be its agent."""
    config = get_config(args.config, args.name, args.grid_order)
    agent_loop.check_program(config)
    chosen = workers.parse_gpus(args.gpus) if args.gpus else None  # refused before anything is created
    storage = st.get_storage(args.storage)
    sid, created = create_sweep(config, storage, sweep_id=config_id(config), source=args.config)
    print(f"{'Created' if created else 'Resuming'} sweep {sid} from {args.config}")
    name = config.get("name")
    same_name = [s for s, c, _ in list_sweeps(storage) if s != sid and name and c.get("name") == name]
    if created and same_name:
        print(f"note: sweep(s) {', '.join(same_name)} have this name but another config; the name now refers to {sid}")
    if chosen:
        return workers.run_workers(chosen, worker_argv(args, sid))
    return agent_loop.run_agent(sid, storage, args.count, agent_loop.parse_pins(args.param),
                                args.max_consecutive_failures, args.kill_delay, args.verbose)


def status(args) -> int:
    """`status`: counts, best trial and the trials of one sweep, or a list of all sweeps."""
    storage = st.get_storage(args.storage)
    if not args.sweep:
        rows = list_sweeps(storage)
        print(f"sweeps in {st.describe(storage)}: {len(rows) or 'none'}")
        for sid, config, summary in rows:
            print(f"  {sid}  {config.get('name') or '-':<24} {config['method']:<6} {config['metric']['name']:<12} "
                  f"{summary.n_trials} trials  created {summary.user_attrs.get('created')}")
        return 0
    study, config = load_sweep(args.sweep, storage, wait=False)
    df, metric = trials_frame(study), config["metric"]["name"]
    counts = df["state"].value_counts().to_dict() if len(df) else {}
    print(f"sweep {study.study_name} ({config.get('name') or 'unnamed'}): {config['method']}, "
          f"{config['metric'].get('goal')} {metric}"
          + (f", run_cap {config['run_cap']}" if config.get("run_cap") else ""))
    print("trials: " + (", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none"))
    b = best(study)
    if b:
        print(f"best: trial {b.number}  {metric}={b.value:.4g}  run_dir={b.user_attrs.get('run_dir')}")
        print(f"      {b.user_attrs.get('command')}")
    if len(df):
        cols = [c for c in df.columns if c not in ("start", "command", "run_dir")]
        print(df[cols].rename(columns={"value": metric}).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print_running(study, metric)
    return 0


def print_running(study, metric: str) -> None:
    """What each agent (host:pid), GPU worker and SLURM task is running now, and since when."""
    rows = running(study)
    print(f"running now: {len(rows) or 'nothing'}")
    for r in rows:
        where = "  ".join(f"{k} {r[k]}" for k in ("worker", "gpu", "slurm") if r.get(k))
        last = f"{metric}={r['last']:.4g} after {r['reports']} report(s)" if r["last"] is not None else "no report yet"
        print(f"  trial {r['trial']:>3}  agent {r['agent']}  {where}  since {r['since']} ({r['for']})  {last}")


def report(args) -> int:
    """`report`: write the sweep's HTML report and print where it is."""
    storage = st.get_storage(args.storage)
    study, config = load_sweep(args.sweep, storage, wait=False)
    path = sweep_report.write_report(study, config, args.out)
    print(f"report: {path}")
    return 0


def add_agent_options(p):
    p.add_argument("--count", type=positive, metavar="N", help="number of trials this agent runs (default: until done)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="pin a parameter to a constant for this agent (repeatable), e.g. --param epochs=1")
    p.add_argument("--max-consecutive-failures", type=positive, default=agent_loop.MAX_FAILURES, metavar="N",
                   help=f"stop after this many failed trials in a row (default {agent_loop.MAX_FAILURES})")
    p.add_argument("--kill-delay", type=float, default=agent_loop.runner.KILL_DELAY, metavar="SECONDS",
                   help="seconds between SIGTERM and SIGKILL when a trial is stopped (default 30)")
    p.add_argument("--verbose", action="store_true", help="also show each trial's output")
    p.add_argument("--gpus", metavar="IDS|all|cpu:N",
                   help="one worker per GPU (e.g. 0,1,2,3 or all), each trial on its own GPU; cpu:N for N CPU workers")


def positive(text) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return n


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "--storage" else 1
    if i < len(argv) and argv[i] not in COMMANDS:
        argv.insert(i, "run")  # `python sweep.py sweep.yaml --count N`
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", help="journal file path or SQLAlchemy URL (default sweeps_db/sweeps.journal)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, helptext in (("create", "create a sweep from a config file and print its id"),
                           ("run", "create or resume the sweep of a config file and run an agent on it")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config", help="sweep config YAML (W&B format)")
        p.add_argument("--name", help="sweep name (overrides the config's `name`)")
        p.add_argument("--storage", default=argparse.SUPPRESS, help="journal file path or SQLAlchemy URL")
        p.add_argument("--grid-order", choices=("wandb", "shuffled"), default="wandb",
                       help="grid sweeps: W&B's order (default) or a seeded shuffled order")
        if name == "run":
            add_agent_options(p)
    p = sub.add_parser("agent", help="run trials of a sweep")
    p.add_argument("sweep", help="sweep id (or entity/project/id, a sweep name, or its config file)")
    p.add_argument("--storage", default=argparse.SUPPRESS, help="journal file path or SQLAlchemy URL")
    add_agent_options(p)
    p = sub.add_parser("status", help="show a sweep's trials and best (all sweeps without an id)")
    p.add_argument("sweep", nargs="?")
    p.add_argument("--storage", default=argparse.SUPPRESS, help="journal file path or SQLAlchemy URL")
    p = sub.add_parser("report", help="write a sweep's self-contained HTML report")
    p.add_argument("sweep")
    p.add_argument("--out", help="output HTML path (default reports/sweep-<id>.html)")
    p.add_argument("--storage", default=argparse.SUPPRESS, help="journal file path or SQLAlchemy URL")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no Optuna INFO lines between ours
    if args.cmd == "create":
        create(args)
        return 0
    return {"agent": agent, "run": run, "status": status, "report": report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
