"""Offline W&B sweeps on Optuna: the same sweep.yaml that `wandb sweep` + `wandb agent` run online.

    python sweep.py create sweep.yaml                  # prints a sweep id
    python sweep.py agent ID --count 5                 # runs trials (any number of agents at once)
    python sweep.py sweep.yaml --count 5               # both: creates, or resumes the sweep of this file
    python sweep.py status [ID]                        # progress and best trial (all sweeps without ID)
    python sweep.py report ID                          # self-contained HTML report

`--storage PATH_OR_URL` picks the Optuna storage: default a journal file under sweeps_db/ that several local
agents share; a SQLAlchemy URL such as postgresql://user:password@host/db for agents on several machines.
`--param KEY=VALUE` (repeatable) pins a parameter for this agent, e.g. --param epochs=1 --param img_size=64.
"""
import argparse
import sys

import optuna

from bddseg.cli import run_cli
from bddseg.sweeper import agent as agent_loop
from bddseg.sweeper import storage as st
from bddseg.sweeper import sweep_report
from bddseg.sweeper.config import load_config
from bddseg.sweeper.study import best, config_id, create_sweep, list_sweeps, load_sweep, trials_frame

COMMANDS = ("create", "agent", "status", "report", "run")


def get_config(path, name=None) -> dict:
    """Validated sweep config from a YAML file (exit 2 with W&B's schema message when invalid)."""
    config = load_config(path)
    if name:
        config["name"] = name
    return config


def create(args) -> str:
    """`create`: a new sweep from a config file; prints its id and how to start agents."""
    config = get_config(args.config, args.name)
    storage = st.get_storage(args.storage)
    print(f"Creating sweep from: {args.config}")
    sid, _ = create_sweep(config, storage, source=args.config)
    print(f"Created sweep with ID: {sid}  (storage: {st.describe(storage)})")
    storage_arg = f" --storage {args.storage}" if args.storage else ""
    print(f"Run sweep agent with: python sweep.py agent {sid}{storage_arg}")
    return sid


def agent(args) -> int:
    """`agent`: run trials of an existing sweep."""
    return agent_loop.run_agent(args.sweep, args.storage, args.count, agent_loop.parse_pins(args.param),
                                args.max_consecutive_failures, args.kill_delay, args.verbose)


def run(args) -> int:
    """Combined form: create the sweep of this config (or resume it: same config -> same id), then be its agent."""
    config = get_config(args.config, args.name)
    agent_loop.check_program(config)
    storage = st.get_storage(args.storage)
    sid, created = create_sweep(config, storage, sweep_id=config_id(config), source=args.config)
    print(f"{'Created' if created else 'Resuming'} sweep {sid} from {args.config}")
    name = config.get("name")
    same_name = [s for s, c, _ in list_sweeps(storage) if s != sid and name and c.get("name") == name]
    if created and same_name:
        print(f"note: sweep(s) {', '.join(same_name)} have this name but another config; the name now refers to {sid}")
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
    return 0


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
