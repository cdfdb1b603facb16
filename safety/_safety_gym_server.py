"""The child process of :mod:`safety.safety_gymnasium`: Safety-Gymnasium envs served over a binary pipe.

Run by the Safety-Gymnasium venv's python (``safety/build_safety_env.sh``), never imported by the
main environment; it imports only the standard library, numpy and safety_gymnasium.

    python _safety_gym_server.py TASK NUM_ENVS [--spare] [--no-autoreset] [--max-episode-steps K]
                                 [--parent-pid PID]

Protocol (native byte order, both ends on one machine). After start-up the child writes its hello:
a little header ``uint32 length`` and that many bytes of JSON (the spaces and the episode length).
Then it serves commands read from stdin, one at a time, each one opcode byte and a payload:

``R`` reset
    payload ``uint8 seeded`` then ``NUM_ENVS`` ``uint64`` base seeds (ignored unless ``seeded``).
    Seeded: every env starts episode 0 of its new base seed. Not seeded: every env starts its next
    episode. Reply: ``obs float64 [n, D]``.
``S`` step
    payload ``actions float64 [n, A]``. Reply: ``obs float64 [n, D]``, ``reward float64 [n]``,
    ``cost float64 [n]``, ``terminated uint8 [n]``, ``truncated uint8 [n]``, then the last
    observation ``float64 [D]`` of each env whose episode ended (in env order). With autoreset
    (the default) such an env has already started its next episode and ``obs`` is that episode's
    first observation (gymnasium's SAME_STEP autoreset).
``Q`` quit.

Episode seeds: episode ``k`` of an env with base seed ``b`` is ``reset(seed=episode_seed(b, k))``,
``episode_seed(b, 0) = b`` and, for ``k >= 1``, the first word of ``SeedSequence(b, spawn_key=(k,))``.
Every episode is thus fixed by ``(b, k)`` alone: it is played on an env that has been reset once
before (a warm-up with ``WARM_SEED``; an env's first reset differs, see :class:`Slot`), and a later
reset does not depend on what the env played before. That lets ``--spare`` keep a second env per
slot, reset for the next episode by a background thread while the current episode runs; an
episode's end switches to it instead of paying Safety-Gymnasium's ~1.2 s reset (it rebuilds the
MuJoCo model) in the step. The numbers are the same with and without spares: those of one warmed
env stepped in-process and reset with ``episode_seed(b, k)`` at each episode's start.

Any error is written to stderr (the parent shows its tail) and the child exits with status 1. It
exits when stdin reaches EOF (the parent is gone), ignores SIGINT (the parent handles Ctrl-C and
closes it), and with ``--parent-pid`` asks the kernel for SIGKILL when the parent dies (Linux).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import threading
import traceback
from collections import deque

import numpy as np

#: the seed of every env's warm-up reset (see :class:`Slot`)
WARM_SEED = 0


def episode_seed(base: int, k: int) -> int:
    """The seed of episode ``k`` of an env whose base seed is ``base`` (see the module docstring)."""
    if k == 0:
        return int(base)
    return int(np.random.SeedSequence(int(base), spawn_key=(int(k),)).generate_state(1, np.uint32)[0])


def _die_with_parent(parent_pid: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


class _Resetter(threading.Thread):
    """Resets envs in the background, one job at a time, in the order asked."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self._jobs: deque = deque()
        self._cv = threading.Condition()

    def submit(self, env, seed: int) -> dict:
        job = {"env": env, "seed": seed, "done": threading.Event(), "obs": None, "error": None}
        with self._cv:
            self._jobs.append(job)
            self._cv.notify()
        return job

    def run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs:
                    self._cv.wait()
                job = self._jobs.popleft()
            try:
                job["obs"] = np.asarray(job["env"].reset(seed=job["seed"])[0], dtype=np.float64)
            except BaseException as exc:  # reported by the main thread, which waits for the job
                job["error"] = exc
                job["trace"] = traceback.format_exc()
            job["done"].set()


def _wait(job: dict) -> np.ndarray:
    job["done"].wait()
    if job["error"] is not None:
        sys.stderr.write(job["trace"])
        raise job["error"]
    return job["obs"]


class Slot:
    """One env of the vector: its episode counter, base seed, env and (with spares) the spare env.

    Every env object is warmed up by one reset (``WARM_SEED``) before its first episode: an env's
    first reset compiles the MuJoCo model twice (~2x the CPU of later resets) and leaves the solver
    in a state later resets do not, so only warmed envs play episodes; every episode then is
    ``reset(seed=episode_seed(base, k))`` on a warmed env, whichever object that is."""

    def __init__(self, make, resetter: _Resetter | None):
        self.envs = [make()] + ([make()] if resetter is not None else [])
        self.warm: list[dict | None] = [None] * len(self.envs)  # pending warm-up jobs
        self.warmed = [False] * len(self.envs)
        self.active = 0
        self.base = 0
        self.episode = 0
        self.resetter = resetter
        self.job: dict | None = None  # the spare's pending reset (episode self.episode + 1)
        if resetter is not None:  # warm both up in the background from start-up on
            self.warm = [resetter.submit(env, WARM_SEED) for env in self.envs]

    @property
    def env(self):
        return self.envs[self.active]

    def _ensure_warm(self, i: int) -> None:
        if self.warm[i] is not None:
            _wait(self.warm[i])
            self.warm[i] = None
        elif not self.warmed[i]:
            self.envs[i].reset(seed=WARM_SEED)
        self.warmed[i] = True

    def start(self, base: int | None) -> np.ndarray:
        """Begin episode 0 of ``base`` (when given) or the next episode; return its first observation."""
        if base is None and self.job is not None:  # the next episode is ready in the spare
            job, self.job = self.job, None
            obs = _wait(job)
            self.active, self.episode = 1 - self.active, self.episode + 1
        else:
            if self.job is not None:  # never reset an env the background thread is resetting
                _wait(self.job)
                self.job = None
            if base is None:
                self.episode += 1
            else:
                self.base, self.episode = int(base), 0
            self._ensure_warm(self.active)
            obs = np.asarray(self.env.reset(seed=episode_seed(self.base, self.episode))[0], dtype=np.float64)
        if self.resetter is not None:  # queued after the spare's warm-up, so it runs on a warmed env
            spare = 1 - self.active
            self.warmed[spare], self.warm[spare] = True, None
            self.job = self.resetter.submit(self.envs[spare], episode_seed(self.base, self.episode + 1))
        return obs


def _read_exact(n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(0, left)
        if not chunk:
            os._exit(0)  # stdin closed: the parent is gone
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _space_json(space) -> dict:
    return {
        "shape": list(space.shape),
        "low": np.asarray(space.low, dtype=np.float64).ravel().tolist(),
        "high": np.asarray(space.high, dtype=np.float64).ravel().tolist(),
        "dtype": str(space.dtype),
    }


def serve(args: argparse.Namespace, out: int) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import safety_gymnasium

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(out, view) :]

    kwargs = {} if args.max_episode_steps is None else {"max_episode_steps": args.max_episode_steps}
    resetter = _Resetter() if args.spare else None
    if resetter is not None:
        resetter.start()
    slots = [Slot(lambda: safety_gymnasium.make(args.task, **kwargs), resetter) for _ in range(args.n)]
    env0 = slots[0].envs[0]
    hello = {
        "observation_space": _space_json(env0.observation_space),
        "action_space": _space_json(env0.action_space),
        "max_episode_steps": getattr(env0.spec, "max_episode_steps", None),
        "numpy": np.__version__,
        "safety_gymnasium": getattr(safety_gymnasium, "__version__", "?"),
    }
    payload = json.dumps(hello).encode()
    write(struct.pack("=I", len(payload)) + payload)
    n = args.n
    act_dim = int(np.prod(env0.action_space.shape))
    act_shape = tuple(env0.action_space.shape)
    started = False
    while True:
        op = _read_exact(1)
        if op == b"R":
            seeded = _read_exact(1) == b"\x01"
            seeds = np.frombuffer(_read_exact(8 * n), dtype=np.uint64)
            obs = [s.start(int(seeds[i]) if seeded or not started else None) for i, s in enumerate(slots)]
            started = True
            write(np.stack(obs).astype(np.float64, copy=False).tobytes())
        elif op == b"S":
            if not started:
                raise RuntimeError("step before reset")
            actions = np.frombuffer(_read_exact(8 * n * act_dim), dtype=np.float64).reshape(n, *act_shape)
            obs_out, finals = [], []
            reward = np.empty(n)
            cost = np.empty(n)
            term = np.zeros(n, dtype=np.uint8)
            trunc = np.zeros(n, dtype=np.uint8)
            for i, slot in enumerate(slots):
                o, r, c, te, tr, _ = slot.env.step(actions[i])
                reward[i], cost[i], term[i], trunc[i] = r, c, bool(te), bool(tr)
                o = np.asarray(o, dtype=np.float64)
                if (te or tr) and not args.no_autoreset:
                    finals.append(o)
                    o = slot.start(None)
                elif te or tr:
                    finals.append(o)
                obs_out.append(o)
            parts = [np.stack(obs_out).tobytes(), reward.tobytes(), cost.tobytes(), term.tobytes(), trunc.tobytes()]
            parts.extend(f.tobytes() for f in finals)
            write(b"".join(parts))
        elif op == b"Q":
            return
        else:
            raise RuntimeError(f"unknown opcode {op!r}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("task")
    p.add_argument("n", type=int)
    p.add_argument("--spare", action="store_true")
    p.add_argument("--no-autoreset", action="store_true")
    p.add_argument("--max-episode-steps", type=int, default=None)
    p.add_argument("--parent-pid", type=int, default=None)
    args = p.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.parent_pid is not None:
        _die_with_parent(args.parent_pid)
    out = os.dup(1)  # the protocol's channel; library prints go to stderr instead
    os.dup2(2, 1)
    try:
        serve(args, out)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
