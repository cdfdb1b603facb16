r"""Safety-Gymnasium for real: its tasks as CMDP vector envs, served by child processes in their own venv.

Safety-Gymnasium 1.0.0 needs gymnasium 0.28, numpy < 1.24 and Python 3.10; this suite runs
gymnasium 1.x on numpy 2. So the tasks live in their own virtual environment (``make safety-env``,
i.e. ``safety/build_safety_env.sh``: ``.deeprl/safety-venv`` at the repository root, or
``$SAFETY_VENV``) and are stepped there by child processes running ``safety/_safety_gym_server.py``;
this module never imports safety_gymnasium.

:class:`SafetyGymnasiumVectorEnv` is a :class:`gymnasium.vector.VectorEnv` over ``num_envs`` copies
of one task, split into contiguous blocks over ``n_workers`` children (default one per CPU core).
A step writes every child's actions first and then reads every reply, so the children step in
parallel. The pipe carries raw bytes: ``float64`` actions in; ``float64`` observations, rewards and
costs and ``uint8`` flags out (the protocol is in the server's docstring); nothing is pickled.
Like the suite's own CMDP tasks (:class:`~safety.envs.base.BatchedCMDP`) it

* autoresets in gymnasium's ``SAME_STEP`` mode: an env whose episode ends returns the next episode's
  first observation, its last observation is in ``info["final_obs"]`` (``[N, D]``, rows of the
  finished envs; mask ``info["_final_obs"]``) and its step info in ``info["final_info"]``;
* reports the step cost :math:`c_t` (Safety-Gymnasium's ``cost``, the sum of its components) in
  ``info["cost"]`` (``[N]`` float64), so :class:`~safety.cmdp.CostMonitor` and every safe agent read it;
* is seeded per env: ``reset(seed=s)`` gives env ``i`` the base seed :math:`b_i = s + i` (or
  ``s[i]`` for a list), and episode :math:`k` of env ``i`` is Safety-Gymnasium's
  ``reset(seed=episode_seed(b_i, k))`` (:math:`\text{episode\_seed}(b, 0) = b`), so the same seed
  gives the same numbers whatever the number of children and whether spares are used.

Cheap resets: a Safety-Gymnasium ``reset`` rebuilds the MuJoCo model (~0.9-1.2 s of CPU against
~0.55 ms per step, so a 1000-step episode spends more in its reset than in its steps), nearly all
of it decoding the same skybox texture every time. With ``fast_reset=True`` (default) the children
compile the new world without the texture files and copy the result into the env's previous model
(the server's docstring: the same model field for field, bit for bit; ``fast_reset=False`` restores
the full compile; so does ``DEEPRL_SAFETY_FAST_RESET=0`` when ``fast_reset`` is not given). A
navigation reset then costs ~25 ms (Goal) to ~0.2 s (Button, whose layout is
drawn by rejection sampling).

Hiding the reset. With
``spare_envs=True`` (default) each child keeps a second env per slot and resets it for the next
episode on a background thread (MuJoCo's compiler releases the GIL) while the current episode runs
and the learner computes; an episode's end then switches to it. Every env object is warmed up by
one reset before it plays (an env's first reset compiles the model twice and leaves the solver in
another state than later resets), and a later reset does not depend on what the env played before,
so spares change no number: env ``i``'s steps equal those of one warmed
``safety_gymnasium.make(task)`` stepped in-process with the same actions and reset with
``seed=episode_seed(b_i, k)`` at the start of each episode ``k`` (``tests/test_safety_gymnasium.py``
checks it bit for bit). Spares buy wall time, not CPU: ``benchmarks/safety_gym_throughput.py``.

Shutdown: ``close()`` (also run when the env is garbage-collected or the interpreter exits) asks
every child to quit and kills the ones that do not. A child exits by itself when its stdin reaches
EOF, so it dies with the parent even on SIGKILL; on Linux it also asks for SIGKILL on the parent's
death (``PR_SET_PDEATHSIG``, when spawned from the main thread). Children ignore SIGINT: Ctrl-C
reaches the learner, whose exit closes them. A child that dies raises :class:`SafetyGymnasiumError`
(one line, with the tail of its stderr).

Env ids: ``safety-gymnasium/<Task>`` for every state-based task of Safety-Gymnasium 1.0.0
(:data:`TASKS`, e.g. ``safety-gymnasium/SafetyPointGoal1-v0``) are registered with gymnasium when
this module is imported, which :func:`core_rl.common.envs.ensure_registered` does for the namespace
(``safety.registration``). ``gymnasium.make`` gives :class:`SafetyGymnasiumEnv` (one env, one
child, no autoreset), ``make_vec``/the suite's ``make_vec_env`` give the vector env.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path
from typing import IO, Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from core_rl.common.errors import ConfigError, EnvError

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER = Path(__file__).resolve().parent / "_safety_gym_server.py"
BUILD_SCRIPT = Path(__file__).resolve().parent / "build_safety_env.sh"
NAMESPACE = "safety-gymnasium"

_AGENTS = ("Point", "Car", "Racecar", "Doggo", "Ant")
_NAV = ("Goal", "Button", "Push", "Circle", "FadingEasy", "FadingHard", "Race")
#: the state-based tasks of Safety-Gymnasium 1.0.0 (its registry less the Vision, Debug and
#: gymnasium-API duplicates); tests check the list against the built venv's registry
TASKS: tuple[str, ...] = tuple(
    sorted(
        [f"Safety{a}{t}{lvl}-v0" for a in _AGENTS for t in _NAV for lvl in (0, 1, 2)]
        + [f"Safety{a}Run0-v0" for a in _AGENTS]
        + [
            f"Safety{r}Velocity-v{v}"
            for r in ("Ant", "HalfCheetah", "Hopper", "Humanoid", "Swimmer", "Walker2d")
            for v in (0, 1)
        ]
    )
)


class SafetyGymnasiumError(EnvError):
    """The Safety-Gymnasium venv is missing, or a child process failed."""


def safety_venv() -> Path:
    """Where the Safety-Gymnasium venv is (``$SAFETY_VENV`` or ``<repo>/.deeprl/safety-venv``)."""
    return Path(os.environ.get("SAFETY_VENV", REPO_ROOT / ".deeprl" / "safety-venv"))


def safety_python() -> Path:
    return safety_venv() / "bin" / "python"


def safety_gymnasium_available() -> tuple[bool, str]:
    """``(True, "")`` when the Safety-Gymnasium venv is built, else ``(False, why)`` in one line."""
    venv = safety_venv()
    marker = venv.with_name(venv.name + ".unavailable")  # written by the build script without a Python 3.10
    if not safety_python().exists() and marker.exists():
        return False, f"{marker.read_text().strip()}: the Safety-Gymnasium venv cannot be built (`make safety-env`)"
    if not safety_python().exists():
        return False, f"the Safety-Gymnasium venv is not built at {venv}: run `make safety-env` (needs Python 3.10)"
    if not any(venv.glob(".safety-installed-*")):
        return False, f"the Safety-Gymnasium venv at {venv} is incomplete: re-run `make safety-env`"
    return True, ""


def task_of(env_id: str) -> str:
    """``"safety-gymnasium/SafetyPointGoal1-v0"`` (or the bare task name) → ``"SafetyPointGoal1-v0"``;
    an unknown task raises one :class:`~core_rl.common.errors.EnvError` naming the id."""
    task = env_id.split("/", 1)[1] if env_id.startswith(NAMESPACE + "/") else env_id
    if task not in TASKS:
        close = [t for t in TASKS if t.lower().startswith(task.lower()[:12])][:6] or list(TASKS[:4])
        raise EnvError(
            f"unknown Safety-Gymnasium env id '{env_id}': '{task}' is not a state-based task of "
            f"safety-gymnasium 1.0.0 (e.g. {', '.join(NAMESPACE + '/' + t for t in close)})"
        )
    return task


def _space(spec: dict[str, Any]) -> gym.spaces.Box:
    shape = tuple(spec["shape"])
    low = np.asarray(spec["low"], dtype=np.float64).reshape(shape)
    high = np.asarray(spec["high"], dtype=np.float64).reshape(shape)
    return gym.spaces.Box(low, high, shape, dtype=np.float64)


class _Child:
    """One server process holding ``n`` envs; reads and writes the raw-bytes protocol."""

    def __init__(
        self, task: str, n: int, spare: bool, autoreset: bool, max_episode_steps: int | None, fast_reset: bool = True
    ):
        ok, why = safety_gymnasium_available()
        if not ok:
            raise SafetyGymnasiumError(why)
        self.n, self.task = n, task
        self.stderr: IO[bytes] = tempfile.TemporaryFile(prefix="safety-gym-child-")
        cmd = [str(safety_python()), "-I", "-u", str(SERVER), task, str(n)]  # -I: not safety/ on sys.path
        cmd += ["--spare"] if spare else []
        cmd += [] if autoreset else ["--no-autoreset"]
        cmd += [] if fast_reset else ["--no-fast-reset"]
        cmd += [] if max_episode_steps is None else ["--max-episode-steps", str(int(max_episode_steps))]
        if threading.current_thread() is threading.main_thread() and sys.platform.startswith("linux"):
            cmd += ["--parent-pid", str(os.getpid())]  # PDEATHSIG follows the spawning thread: main only
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env, bufsize=0
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        self.hello: dict[str, Any] = {}

    def handshake(self) -> None:
        """Read the child's hello (its spaces): the children start in parallel, then each is read."""
        (length,) = struct.unpack("=I", self.read(4, "starting"))
        self.hello = json.loads(self.read(length, "starting"))

    def stderr_tail(self, lines: int = 3) -> str:
        try:
            self.stderr.seek(0)
            text = self.stderr.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        text = [t.strip() for t in text if t.strip()]
        return " | ".join(text[-lines:])

    def _died(self, doing: str) -> SafetyGymnasiumError:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        tail = self.stderr_tail() or "(no stderr)"
        return SafetyGymnasiumError(
            f"Safety-Gymnasium child (pid {self.proc.pid}, task {self.task}) died while {doing} "
            f"(exit code {code}): {tail}"
        )

    def write(self, data: bytes, doing: str) -> None:
        try:
            self._in.write(data)
        except (BrokenPipeError, OSError, ValueError):
            raise self._died(doing) from None

    def read(self, n: int, doing: str) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self._out.read(n - len(buf))
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                raise self._died(doing) from None
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self._in.write(b"Q")
                    self._in.close()
                except (BrokenPipeError, OSError, ValueError):
                    pass
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        finally:
            for f in (self._in, self._out, self.stderr):
                try:
                    f.close()
                except (OSError, ValueError):
                    pass


def _close_children(children: list[_Child]) -> None:
    for child in children:
        child.close()


def fast_reset_default() -> bool:
    """``$DEEPRL_SAFETY_FAST_RESET`` (``1``, the default, or ``0``): whether the children reset by the
    light compile when ``fast_reset`` is not given (so a run through the CLI can turn it off)."""
    raw = os.environ.get("DEEPRL_SAFETY_FAST_RESET", "1").strip()
    if raw not in ("0", "1"):
        raise ConfigError(f"DEEPRL_SAFETY_FAST_RESET must be 0 or 1, got {raw!r}")
    return raw == "1"


def _base_seeds(seed: int | list[int] | None, n: int) -> np.ndarray | None:
    if seed is None:
        return None
    if isinstance(seed, (list, tuple, np.ndarray)):
        if len(seed) != n:
            raise ConfigError(f"reset(seed=...) got {len(seed)} seeds for {n} envs")
        seeds = [int(s) for s in seed]
    else:
        seeds = [int(seed) + i for i in range(n)]
    if any(s < 0 or s >= 2**63 for s in seeds):
        raise ConfigError(f"seeds must be integers in [0, 2**63), got {seeds[:4]}…")
    return np.asarray(seeds, dtype=np.uint64)


class _Bridge:
    """``num_envs`` envs over ``n_workers`` children: the vector env's and the single env's common part."""

    def __init__(
        self,
        task: str,
        num_envs: int,
        n_workers: int | None,
        spare_envs: bool,
        autoreset: bool,
        max_episode_steps: int | None,
        fast_reset: bool | None = None,
    ):
        fast_reset = fast_reset_default() if fast_reset is None else bool(fast_reset)
        if int(num_envs) < 1:
            raise ConfigError(f"num_envs must be at least 1, got {num_envs}")
        if n_workers is not None and int(n_workers) < 1:
            raise ConfigError(f"n_workers must be at least 1, got {n_workers}")
        if max_episode_steps is not None and int(max_episode_steps) < 1:
            raise ConfigError(f"max_episode_steps must be a positive integer, got {max_episode_steps}")
        self.num_envs = int(num_envs)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(self.num_envs, int(n_workers) if n_workers is not None else cores)
        sizes = [self.num_envs // workers + (w < self.num_envs % workers) for w in range(workers)]
        self.children: list[_Child] = []
        self._finalizer = weakref.finalize(self, _close_children, self.children)
        try:
            for size in sizes:
                self.children.append(_Child(task, size, spare_envs, autoreset, max_episode_steps, fast_reset))
            for child in self.children:
                child.handshake()
        except BaseException:
            self._finalizer()
            raise
        hello = self.children[0].hello
        self.observation_space = _space(hello["observation_space"])
        self.action_space = _space(hello["action_space"])
        self.max_episode_steps = hello.get("max_episode_steps")
        self.fast_reset = bool(hello.get("fast_reset", False))
        self.obs_dim = int(np.prod(self.observation_space.shape))
        self.act_dim = int(np.prod(self.action_space.shape))
        self.seeded = False

    def reset(self, seed: int | list[int] | None) -> np.ndarray:
        seeds = _base_seeds(seed, self.num_envs)
        if seeds is None and not self.seeded:
            entropy = np.random.SeedSequence().generate_state(2 * self.num_envs, np.uint32)
            seeds = (entropy[0::2].astype(np.uint64) << np.uint64(31)) ^ entropy[1::2].astype(np.uint64)
        flag = b"\x00" if seeds is None else b"\x01"
        seeds = np.zeros(self.num_envs, dtype=np.uint64) if seeds is None else seeds
        start = 0
        for child in self.children:
            child.write(b"R" + flag + seeds[start : start + child.n].tobytes(), "resetting")
            start += child.n
        self.seeded = True
        obs = [np.frombuffer(c.read(8 * c.n * self.obs_dim, "resetting"), dtype=np.float64) for c in self.children]
        return np.concatenate(obs).reshape(self.num_envs, *self.observation_space.shape)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(obs, reward, cost, terminated, truncated, final_obs of the finished envs [k, D])``."""
        a = np.asarray(actions, dtype=np.float64)
        if a.size != self.num_envs * self.act_dim:
            raise EnvError(
                f"actions of shape {np.shape(actions)} do not fit {self.num_envs} envs with action shape "
                f"{self.action_space.shape}"
            )
        a = np.ascontiguousarray(a.reshape(self.num_envs, self.act_dim))
        start = 0
        for child in self.children:
            child.write(b"S" + a[start : start + child.n].tobytes(), "stepping")
            start += child.n
        D = self.obs_dim
        obs, rew, cost, term, trunc, finals = [], [], [], [], [], []
        for c in self.children:
            n = c.n
            raw = c.read(8 * n * (D + 2) + 2 * n, "stepping")
            obs.append(np.frombuffer(raw, np.float64, n * D))
            rew.append(np.frombuffer(raw, np.float64, n, 8 * n * D))
            cost.append(np.frombuffer(raw, np.float64, n, 8 * n * (D + 1)))
            te = np.frombuffer(raw, np.uint8, n, 8 * n * (D + 2)).astype(bool)
            tr = np.frombuffer(raw, np.uint8, n, 8 * n * (D + 2) + n).astype(bool)
            term.append(te)
            trunc.append(tr)
            k = int((te | tr).sum())
            if k:
                finals.append(np.frombuffer(c.read(8 * k * D, "stepping"), np.float64).reshape(k, D))
        shape = self.observation_space.shape
        return (
            np.concatenate(obs).reshape(self.num_envs, *shape),
            np.concatenate(rew),
            np.concatenate(cost),
            np.concatenate(term),
            np.concatenate(trunc),
            np.concatenate(finals).reshape(-1, *shape) if finals else np.zeros((0, *shape)),
        )

    def close(self) -> None:
        self._finalizer()


class SafetyGymnasiumVectorEnv(VectorEnv):
    """``num_envs`` copies of one Safety-Gymnasium task in child processes (SAME_STEP autoreset,
    ``info["cost"]``, per-env seeds, spares reset ahead); see the module docstring."""

    metadata: ClassVar[dict[str, Any]] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
        "cost_keys": ("cost",),
    }

    def __init__(
        self,
        task: str = "SafetyPointGoal1-v0",
        num_envs: int = 1,
        n_workers: int | None = None,
        spare_envs: bool = True,
        max_episode_steps: int | None = None,
        fast_reset: bool | None = None,
    ):
        self.task = task_of(task)
        self._bridge = _Bridge(self.task, num_envs, n_workers, spare_envs, True, max_episode_steps, fast_reset)
        self.num_envs = self._bridge.num_envs
        self.single_observation_space = self._bridge.observation_space
        self.single_action_space = self._bridge.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = dict(type(self).metadata)
        self.max_episode_steps = self._bridge.max_episode_steps

    @property
    def fast_reset(self) -> bool:
        """Whether the children reset by the light compile (a navigation task, ``fast_reset=True``)."""
        return self._bridge.fast_reset

    @property
    def n_workers(self) -> int:
        return len(self._bridge.children)

    @property
    def child_pids(self) -> list[int]:
        return [c.proc.pid for c in self._bridge.children]

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        return self._bridge.reset(seed), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._bridge.seeded:
            self._bridge.reset(None)  # gymnasium would refuse; starting unseeded episodes is kinder
        obs, reward, cost, terminated, truncated, finals = self._bridge.step(actions)
        info: dict[str, Any] = {"cost": cost}
        done = terminated | truncated
        if done.any():
            final_obs = obs.copy()
            final_obs[done] = finals
            info.update(
                final_obs=final_obs,
                _final_obs=done.copy(),
                final_info={"cost": cost.copy(), "_cost": done.copy()},
                _final_info=done.copy(),
            )
        return obs, reward, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self._bridge.close()


class SafetyGymnasiumEnv(gym.Env):
    """One Safety-Gymnasium env in one child process, as a plain ``gymnasium.Env`` with the suite's
    5-tuple ``step`` and ``info["cost"]`` (what ``gymnasium.make("safety-gymnasium/<Task>")`` gives)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": [], "cost_keys": ("cost",)}

    def __init__(
        self, task: str = "SafetyPointGoal1-v0", max_episode_steps: int | None = None, fast_reset: bool | None = None
    ):
        self.task = task_of(task)
        self._bridge = _Bridge(self.task, 1, 1, False, False, max_episode_steps, fast_reset)
        self.observation_space = self._bridge.observation_space
        self.action_space = self._bridge.action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self._bridge.reset(seed)[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, cost, terminated, truncated, finals = self._bridge.step(np.asarray(action)[None])
        out = finals[0] if len(finals) else obs[0]
        return out, float(reward[0]), bool(terminated[0]), bool(truncated[0]), {"cost": float(cost[0])}

    def close(self) -> None:
        self._bridge.close()


def _single_creator(task: str):  # noqa: ANN202 - a gymnasium entry point
    def make(**kwargs: Any) -> SafetyGymnasiumEnv:
        return SafetyGymnasiumEnv(task, **kwargs)

    return make


def _vector_creator(task: str):  # noqa: ANN202 - a gymnasium vector entry point
    def make(num_envs: int = 1, **kwargs: Any) -> SafetyGymnasiumVectorEnv:
        return SafetyGymnasiumVectorEnv(task, num_envs=num_envs, **kwargs)

    make.metadata = SafetyGymnasiumVectorEnv.metadata  # type: ignore[attr-defined]
    return make


def register_envs() -> None:
    """Register ``safety-gymnasium/<Task>`` for every task of :data:`TASKS` (idempotent)."""
    for task in TASKS:
        env_id = f"{NAMESPACE}/{task}"
        if env_id not in gym.envs.registry:
            gym.register(id=env_id, entry_point=_single_creator(task), vector_entry_point=_vector_creator(task))


register_envs()
