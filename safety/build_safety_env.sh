#!/usr/bin/env bash
# Build the isolated Safety-Gymnasium environment driven as child processes by
# safety.safety_gymnasium (the main .venv never imports safety_gymnasium: the two speak a binary
# pipe protocol, see safety/_safety_gym_server.py).  Usage:  bash safety/build_safety_env.sh [VENV_DIR]
# Default VENV_DIR: .deeprl/safety-venv (git-ignored; $SAFETY_VENV overrides).  Idempotent: a stamp
# file records the pins it was built with and the script returns at once when they have not changed.
#
# Pins: safety-gymnasium 1.0.0 with its official dependency pins -- gymnasium 0.28.1, mujoco 2.3.3,
# pygame 2.1.0, gymnasium-robotics 1.2.2 -- and numpy < 1.24 (the layouts match the reference only
# there). They install on Python 3.10 only (pygame 2.1.0 has no 3.11 wheel; safety-gymnasium's
# mutable dataclass defaults fail on 3.11), so the venv is built on a Python 3.10: $PYTHON, else
# `python3.10` on PATH, else pyenv's ~/.pyenv/versions/3.10*/bin/python. Without one the script
# says so in one line and exits 0; the dependent tests then skip with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${SAFETY_VENV:-.deeprl/safety-venv}}"
PINS=(
  "safety-gymnasium==1.0.0"
  "gymnasium==0.28.1"
  "gymnasium-robotics==1.2.2"
  "mujoco==2.3.3"
  "pygame==2.1.0"
  "numpy>=1.21,<1.24"
)
STAMP="$VENV/.safety-installed-$(printf '%s\n' "${PINS[@]}" | cksum | cut -d' ' -f1)"
if [ -f "$STAMP" ]; then
  echo "safety venv up to date: $VENV"
  exit 0
fi
is_py310() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; }
PY310=""
for cand in "${PYTHON:-}" python3.10 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python; do
  if [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && is_py310 "$cand"; then PY310="$cand"; break; fi
done
if [ -z "$PY310" ]; then
  WHY="no Python 3.10 found for the Safety-Gymnasium venv (python3.10 on PATH or ~/.pyenv/versions/3.10*)"
  mkdir -p "$(dirname "$VENV")" && echo "$WHY" > "$VENV.unavailable"  # the tests' skip reason
  echo "safety-env: $WHY; Safety-Gymnasium tests will skip"
  exit 0
fi
rm -f "$VENV.unavailable"
test -x "$VENV/bin/python" || "$PY310" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${PINS[@]}"
# Smoke check: a task builds, resets and steps headless.
"$VENV/bin/python" -c "
import numpy as np, safety_gymnasium
env = safety_gymnasium.make('SafetyPointGoal1-v0')
obs, info = env.reset(seed=0)
obs, reward, cost, terminated, truncated, info = env.step(env.action_space.sample())
print('safety_gymnasium', safety_gymnasium.__version__, 'numpy', np.__version__, 'obs', obs.shape)
"
rm -f "$VENV"/.safety-installed-*
touch "$STAMP"
echo "safety venv built: $VENV"
