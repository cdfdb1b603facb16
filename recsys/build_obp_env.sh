#!/usr/bin/env bash
# Build the isolated Open Bandit Pipeline environment used only by the OBD benchmark and the
# equality test (recsys/obd.py runs OBP's estimators in it as a subprocess on saved inputs; the main
# .venv never imports obp).  Usage:  bash recsys/build_obp_env.sh [VENV_DIR]
# Default VENV_DIR: .deeprl/obp-venv (git-ignored).  Idempotent: a stamp file records the pins it
# was built with and the script returns at once when they have not changed.
#
# Pins (measured to import obp 0.5.7 and run its OBD protocol): Python 3.11 (pyenv), numpy < 2,
# pandas 2.0.3 (newer pandas breaks OBP's dataset loader), scikit-learn < 1.6, scipy, matplotlib,
# seaborn, tqdm, pyyaml and torch 2.13 (CPU). obp is installed with --no-deps
# --ignore-requires-python because its metadata pins versions that do not install on Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for cand in /root/.pyenv/versions/3.11.7/bin/python "$HOME/.pyenv/versions/3.11.7/bin/python" \
              /root/.pyenv/versions/3.10.13/bin/python python3.11 python3.10; do
    if command -v "$cand" >/dev/null 2>&1; then PYTHON="$cand"; break; fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "error: no Python 3.10/3.11 found for the OBP venv (set PYTHON=...)" >&2
  exit 2
fi
VENV="${1:-${OBP_VENV:-.deeprl/obp-venv}}"
PINS=(
  "numpy<2"
  "pandas==2.0.3"
  "scikit-learn<1.6"
  "scipy<1.14"
  "matplotlib<3.10"
  "seaborn"
  "tqdm"
  "pyyaml"
  "torch==2.13.0"
)
OBP="obp==0.5.7"
STAMP="$VENV/.obp-installed-$(printf '%s\n' "${PINS[@]}" "$OBP" | cksum | cut -d' ' -f1)"
if [ -f "$STAMP" ]; then
  echo "obp venv up to date: $VENV"
  exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "${PINS[@]}"
"$VENV/bin/python" -m pip install -q --no-deps --ignore-requires-python "$OBP"
# Smoke check: OBP's estimators and its BTS policy import and run.
"$VENV/bin/python" -c "
import numpy as np, pandas as pd, obp
from obp.ope import InverseProbabilityWeighting
from obp.policy import BernoulliTS
print('obp', obp.__version__, 'numpy', np.__version__, 'pandas', pd.__version__)
"
rm -f "$VENV"/.obp-installed-*
touch "$STAMP"
echo "obp venv built: $VENV"
