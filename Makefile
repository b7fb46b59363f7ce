# Two commands do all the set-up: `make demo` (the main job end to end) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY := .venv/bin/python
PIP_NOISE := is ignored: it is neither a file nor a directory

.PHONY: demo test venv clean

clean:  ## remove generated outputs (datasets, checkpoints, W&B runs, sweeps, reports); keeps .venv
	rm -rf artifacts models eval wandb sweeps_db reports bench/out

venv: .venv/.installed

.venv/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	@echo "installing requirements into .venv (2-6 minutes the first time, by CPU) ..."
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .  # the bddseg package
	@touch $@

# The main job on the embedded synthetic data, sized for ~10 minutes on 2 CPU cores (time budgets, not epochs).
demo: venv
	$(PY) data/prepare.py
	$(PY) train.py --recipe person --time_budget 4
	$(PY) eval.py --latest
	$(PY) sweep.py sweep.yaml --name demo --count 2 --param img_size=64 --param time_budget=0.75
	$(PY) eval.py --sweep demo
	$(PY) sweep.py report demo
	@$(PY) -m bddseg.outputs

test: venv
	$(PY) -m pytest -q tests
