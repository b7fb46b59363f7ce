# Two commands do all the set-up: `make demo` (the main job end to end) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY := .venv/bin/python
PIP_NOISE := is ignored: it is neither a file nor a directory

.PHONY: demo test venv clean

venv: .venv/.installed

.venv/.installed: requirements.txt
	@test -x $(PY) || python3 -m venv .venv
	@echo "installing requirements into .venv (about 2 minutes the first time) ..."
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	@touch $@

demo: venv
	$(PY) data/prepare.py

test: venv
	$(PY) -m pytest -q tests
