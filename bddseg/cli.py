"""What every entry point shares on the command line: UserError -> one 'error: ...' line and exit 2, str2bool."""
import argparse
import sys


class UserError(Exception):
    """A problem with the user's input: printed as one clear message, exit code 2, no traceback."""


def run_cli(main, *args, **kwargs):
    """Run an entry point's main(); a UserError becomes 'error: ...' on stderr and exit code 2."""
    try:
        return main(*args, **kwargs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def str2bool(v) -> bool:
    """Parse booleans the way `wandb agent` passes them: True/False/true/false/1/0 (also yes/no)."""
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "y", "t"):
        return True
    if s in ("false", "0", "no", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False/1/0), got {v!r}")
