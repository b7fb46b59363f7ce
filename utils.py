"""Course-facing helpers, re-exported from the package: the W&B mode rule, the dataset resolver, atomic writes.

Each lives in one module of `bddseg` (wb, resolve, atomic, cli); this file keeps `import utils` working.
"""
from bddseg.atomic import atomic_dir, atomic_write, write_json
from bddseg.cli import UserError, run_cli, str2bool
from bddseg.resolve import dataset_name, resolve_data
from bddseg.wb import has_api_key, init_wandb, is_online, wandb_mode

__all__ = ["init_wandb", "wandb_mode", "has_api_key", "is_online", "resolve_data", "dataset_name", "atomic_write",
           "write_json", "atomic_dir", "UserError", "run_cli", "str2bool"]
