#!/usr/bin/env bash
# Build the isolated RecSim NG environment (TensorFlow + recsim-ng) used as a subprocess
# by recsys.recsim_ng_bridge. The main .venv never imports TensorFlow: the two exchange
# parquet files.  Usage:  bash recsys/build_recsim_env.sh [VENV_DIR]
# Default VENV_DIR: .deeprl/recsim-venv (git-ignored).  Idempotent: a stamp file records
# the pins it was built with and the script returns at once when they have not changed.
#
# Pins (measured to run recsim-ng 0.1.2's interest-evolution application): CPU-only
# TensorFlow 2.15.1, TFP 0.23.0, numpy 1.26.4, scipy 1.10.1, gym 0.23.1, jax/jaxlib 0.4.30.
# recsim-ng is installed with --no-deps because its metadata asks for the full `tensorflow`
# wheel (CUDA-enabled, far larger); its other dependencies are listed here explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${1:-${RECSIM_VENV:-.deeprl/recsim-venv}}"
PINS=(
  "tensorflow-cpu==2.15.1"
  "tensorflow-probability==0.23.0"
  "numpy==1.26.4"
  "scipy==1.10.1"
  "gym==0.23.1"
  "jax==0.4.30"
  "jaxlib==0.4.30"
  "edward2==0.0.2"
  "gin-config==0.5.0"
  "absl-py>=1.0"
  "matplotlib>=3.7,<3.9"
  "pyarrow>=14,<17"
  "pandas>=2.1,<2.3"
  "six"
)
RECSIM="recsim-ng==0.1.2"
# The original RecSim (for the interest-evolution environment of the SlateQ paper); --no-deps as
# well: its metadata asks for dopamine-rl and full tensorflow, which the environment module never uses.
RECSIM_ORIG="recsim==0.2.4"
STAMP="$VENV/.recsim-installed-$(printf '%s\n' "${PINS[@]}" "$RECSIM" "$RECSIM_ORIG" | cksum | cut -d' ' -f1)"
if [ -f "$STAMP" ]; then
  echo "recsim venv up to date: $VENV"
  exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${PINS[@]}"
"$VENV/bin/python" -m pip install -q --no-deps "$RECSIM" "$RECSIM_ORIG"
# Smoke check: the interest-evolution application imports and TF runs on the CPU.
TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c "
import tensorflow as tf, recsim_ng
from recsim_ng.applications.recsys_partially_observable_rl import interest_evolution_simulation
print('tensorflow', tf.__version__, 'recsim_ng ok')
"
rm -f "$VENV"/.recsim-installed-*
touch "$STAMP"
echo "recsim venv built: $VENV"
