"""Trial command lines: every `command` macro expands as `wandb agent` expands it."""
import json

from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from bddseg.sweeper.command import arg_formats, build_command

CONFIG = {"arch": "timm/resnet18", "lr": 0.001, "batch_size": 8, "augment": True, "pretrained": False,
          "opt": {"beta": 0.9}}


def test_default_command_is_env_interpreter_program_args():
    argv = build_command(None, "train.py", {"lr": 0.001, "augment": False}, interpreter="/venv/bin/python")
    assert argv == ["/usr/bin/env", "/venv/bin/python", "train.py", "--lr=0.001", "--augment=False"]


def test_argument_formats_equal_wandbs_own():
    wandb_vars = create_sweep_command_args({"args": {k: {"value": v} for k, v in CONFIG.items()}})
    ours = arg_formats(CONFIG)
    for macro in ("args", "args_no_hyphens", "args_no_boolean_flags", "args_json", "args_no_equals",
                  "args_append_hydra", "args_override_hydra"):
        assert ours[macro] == wandb_vars[macro], macro


def test_every_macro(tmp_path):
    args_file = tmp_path / "args.json"
    command = ["${env}", "${interpreter}", "${program}", "--fixed", "1", "${args_no_boolean_flags}", "--",
               "${args_no_hyphens}", "${args_json}", "${args_json_file}", "${envvar:DATA_ROOT}/x",
               "${envvar:NOT_SET_ANYWHERE}", "${unknown_macro}"]
    argv = build_command(command, "train.py", CONFIG, args_json_file=args_file, interpreter="py",
                         environ={"DATA_ROOT": "/data"})
    assert argv == ["/usr/bin/env", "py", "train.py", "--fixed", "1",
                    "--arch=timm/resnet18", "--lr=0.001", "--batch_size=8", "--augment", "--opt={'beta': 0.9}", "--",
                    "arch=timm/resnet18", "lr=0.001", "batch_size=8", "augment=True", "pretrained=False",
                    "opt={'beta': 0.9}", json.dumps(CONFIG), str(args_file), "/data/x", "NOT_SET_ANYWHERE"]
    assert json.loads(argv[-4]) == CONFIG


def test_command_without_program_and_plain_tokens():
    argv = build_command(["python", "-m", "mypkg.train", 3, "${args}"], None, {"lr": 0.1}, interpreter="py")
    assert argv == ["python", "-m", "mypkg.train", "3", "--lr=0.1"]
