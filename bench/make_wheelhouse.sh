#!/usr/bin/env bash
# Make bench/wheelhouse/: the wheels bench/gpu_check.sh installs on the GPU machine, which has no network.
#
#     bash bench/make_wheelhouse.sh                 # Python 3.12, manylinux x86_64 (the GPU machine)
#     PYVER=3.11 DEST=/tmp/wh311 bash bench/make_wheelhouse.sh   # same set for this machine's Python (a dry run)
#
# That machine (Python 3.12, torch 2.11 cu130) already has torch, torchvision, timm, pandas, safetensors, numpy,
# scipy, scikit-learn, matplotlib, requests, httpx, rich, protobuf, pyyaml, tqdm, click, attrs ... (the package
# list of the device docs); the list below is what the project imports there and that is missing, with what those
# need at import time, pinned to the versions of requirements.txt's environment (.venv). `pip download --no-deps`:
# nothing else is pulled in; pure-Python wheels where they exist. albumentations is not needed (nothing imports it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
DEST=${DEST:-bench/wheelhouse}
PIP=${PIP:-.venv/bin/python -m pip}
WHEELS=(
  # fastai and what it imports at import time (fastprogress imports fasthtml.common, which imports its web stack)
  fastai==2.8.12 fastcore==2.2.41 fastprogress==1.1.6 fasttransform==0.0.5 fastdownload==0.0.8
  plum-dispatch==2.9.0 beartype==0.23.1 python-fasthtml==0.14.14 starlette==1.10.0 oauthlib==4.0.1
  itsdangerous==2.2.0 uvicorn==0.54.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 python-multipart==0.0.34
  beautifulsoup4==4.15.0 soupsieve==4.1.3
  # wandb (offline runs) and its needs
  wandb==0.31.0 platformdirs==4.14.9 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2
  opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-semantic-conventions==0.66b2
  opentelemetry-proto==1.45.2 opentelemetry-exporter-otlp-proto-common==1.45.2
  opentelemetry-exporter-http-transport==0.66b2 opentelemetry-exporter-otlp-common==0.66b2
  googleapis-common-protos==1.76.0 cwevals==0.0.1b1 distro==1.9.0 sniffio==1.3.1
  # offline sweeps: optuna (journal storage) and W&B's sweeps (config schema, hyperband)
  optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 mako==1.4.3 colorlog==6.12.0
  sweeps==0.2.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  jsonref==1.1.0
)
rm -rf "$DEST" && mkdir -p "$DEST"
$PIP download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$DEST" "${WHEELS[@]}"
echo "$DEST: $(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) ($(du -sb "$DEST" | cut -f1) bytes)"
