#!/usr/bin/env bash
# Build OmniSafe 0.5.0's benchmark-only environment (.deeprl/omnisafe-venv; never installed by the tests).
# Usage:  bash benchmarks/build_omnisafe_env.sh [VENV_DIR]      Idempotent (a stamp records the pins).
#
# Why these steps (measured): on Python 3.10 pip resolves OmniSafe to a CUDA torch (several GB); on
# Python 3.11 the CPU torch 2.13 wheel these machines carry is taken, but safety-gymnasium 1.0.0 pins
# pygame 2.1.0 (no 3.11 wheel) and declares numpy arrays as dataclass defaults, which Python 3.11
# refuses. So: the pinned stack safety-gymnasium asks for (gymnasium 0.28.1, mujoco 2.3.3,
# gymnasium-robotics 1.2.2, numpy < 1.24) plus OmniSafe's own needs, the three packages with
# --no-deps (pygame is only its keyboard demo), and the array defaults wrapped in default_factory
# returning the very same array (the behaviour Python 3.10 gives).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${OMNISAFE_VENV:-.deeprl/omnisafe-venv}}"
PINS=(
  "torch>=2.4,<2.14" "gymnasium==0.28.1" "numpy==1.23.5" "pandas==2.0.3" "mujoco==2.3.3"
  "pettingzoo==1.23.1" "jinja2" "xmltodict" "pyyaml" "imageio" "tensorboard" "typing-extensions"
  "typer>=0.7" "seaborn" "matplotlib>=3.7.1,<3.9" "moviepy<2" "wandb" "gdown"
)
NODEPS=("safety-gymnasium==1.0.0" "gymnasium-robotics==1.2.2" "omnisafe==0.5.0")
STAMP="$VENV/.omnisafe-installed-$(printf '%s\n' "${PINS[@]}" "${NODEPS[@]}" | cksum | cut -d' ' -f1)"
if [ -f "$STAMP" ]; then echo "omnisafe venv up to date: $VENV"; exit 0; fi
PY311=""
for cand in python3.11 "$HOME"/.pyenv/versions/3.11*/bin/python; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    PY311="$cand"; break
  fi
done
if [ -z "$PY311" ]; then echo "no Python 3.11 found: the OmniSafe venv cannot be built here"; exit 1; fi
test -x "$VENV/bin/python" || "$PY311" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${PINS[@]}"
"$VENV/bin/python" -m pip install -q --no-deps "${NODEPS[@]}"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$VENV/bin/python" - "$SITE/safety_gymnasium" <<'PY'
import pathlib, re, sys
# `color: np.array = COLOR['goal']` -> a default_factory returning that same shared array
pattern = re.compile(r"^(\s+\w+\s*:\s*[^=]+?)\s*=\s*((?:COLOR|GROUP)\[[^\]]+\])\s*$")
patched = 0
for path in pathlib.Path(sys.argv[1]).rglob("*.py"):
    lines = path.read_text().splitlines(keepends=True)
    new = []
    for line in lines:
        m = pattern.match(line.rstrip("\n"))
        if m:
            line = f"{m.group(1)} = __import__('dataclasses').field(default_factory=lambda: {m.group(2)})\n"
            patched += 1
        new.append(line)
    if new != lines:
        path.write_text("".join(new))
print(f"safety_gymnasium: {patched} array dataclass defaults wrapped in default_factory")
PY
"$VENV/bin/python" -W ignore -c "
import omnisafe, safety_gymnasium
env = safety_gymnasium.make('SafetyPointGoal1-v0'); env.reset(seed=0); env.step(env.action_space.sample())
print('omnisafe', omnisafe.__version__, 'safety_gymnasium ok')" 2>&1 | grep -v Adroit
rm -f "$VENV"/.omnisafe-installed-*
touch "$STAMP"
echo "omnisafe venv built: $VENV"
