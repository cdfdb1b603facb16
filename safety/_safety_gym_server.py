"""The child process of :mod:`safety.safety_gymnasium`: Safety-Gymnasium envs served over a binary pipe.

Run by the Safety-Gymnasium venv's python (``safety/build_safety_env.sh``), never imported by the
main environment; it imports only the standard library, numpy and safety_gymnasium.

    python _safety_gym_server.py TASK NUM_ENVS [--spare] [--no-autoreset] [--max-episode-steps K]
                                 [--no-fast-reset] [--verify-fast-reset] [--parent-pid PID]

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

Fast resets (default on; ``--no-fast-reset`` turns them off). A navigation task's ``reset`` (every
task built by Safety-Gymnasium's ``Builder``: Goal, Button, Push, Circle, Run, Race, Fading) draws
the new layout, writes the world's XML and compiles it with ``MjModel.from_xml_string``; 97% of
its ~0.9 s of CPU is that compile, and nearly all of the compile is decoding the skybox texture
(six PNGs, a 3259 x 19554 RGB image) that is the same in every episode. :func:`enable_fast_reset`
keeps everything else exactly as it is -- the RNG draws, the XML text, the ``MjData`` made anew,
every ``mj_forward`` -- and swaps only the compile: the same XML with each file texture replaced
by a 1 x 1 builtin texture of the same name and type (so texture ids are unchanged) is compiled
(~1 ms), and every field of that model except the texture pixels (``tex_*``) -- all the other
arrays, the sizes and the ``opt``/``vis``/``stat`` structs -- is copied into the env's previous
model, whose textures came from the same texture elements. The result is the model a full
compile gives, field for field and bit for bit (``--verify-fast-reset`` also compiles the full XML
at every fast reset and exits with an error on any difference; ``tests/test_safety_gymnasium.py``
checks models and steps against the reference). An env falls back to the full compile whenever the
texture elements or the compiler options differ from its previous model's, or the light model's
sizes differ. An env's first build (it has no previous model yet) starts from a copy of the first
full compile of the same kind in the process (``mj_copyModel``, ~0.1 s), so only one build per
process and task decodes the textures. The Velocity tasks are gymnasium MuJoCo envs
whose reset never compiles (``mj_resetData``): nothing to do there. A fast-reset env also draws
its layout with :func:`_sample_layout`, the library's rejection sampler without numpy's per-call
overhead (same draws, same decisions).

Any error is written to stderr (the parent shows its tail) and the child exits with status 1. It
exits when stdin reaches EOF (the parent is gone), ignores SIGINT (the parent handles Ctrl-C and
closes it), and with ``--parent-pid`` asks the kernel for SIGKILL when the parent dies (Linux).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import re
import signal
import struct
import sys
import threading
import traceback
from collections import deque

import numpy as np

#: the seed of every env's warm-up reset (see :class:`Slot`)
WARM_SEED = 0

# ---- fast resets ---------------------------------------------------------------------------------
_TEXTURE = re.compile(r"<texture\b[^>]*>")
_ATTR = re.compile(r'([\w:]+)="([^"]*)"')
_COMPILER = re.compile(r"<compiler\b[^>]*>")
_tls = threading.local()  # the task whose World.build runs on this thread (resets run on two threads)


class FastResetStats:
    """Counts of the compiles done by envs with fast resets on (per process)."""

    fast = 0  # light compile + copy
    full = 0  # full compile (first build, or a fallback)
    verified = 0  # fast resets checked against a full compile (``--verify-fast-reset``)


def _light_xml(xml: str) -> tuple[str, tuple[str, ...]]:
    """``xml`` with every file texture replaced by a 1 x 1 builtin one of the same name and type, and
    the key (every texture element and the compiler element) under which the pixels are reusable."""
    textures: list[str] = []

    def one(match: re.Match) -> str:
        element = match.group(0)
        textures.append(element)
        attrs = dict(_ATTR.findall(element))
        if not any(k.startswith("file") for k in attrs):
            return element
        keep = "".join(f' {k}="{attrs[k]}"' for k in ("name", "type") if k in attrs)
        tail = "/>" if element.endswith("/>") else ">"
        return f'<texture{keep} builtin="flat" width="1" height="1" rgb1="0 0 0" rgb2="0 0 0"{tail}'

    light = _TEXTURE.sub(one, xml)
    compiler = _COMPILER.search(xml)
    return light, (*textures, compiler.group(0) if compiler else "")


def _struct_members(obj):
    """``(name, value)`` of a MuJoCo struct's data members (``opt``, ``vis``, ``stat`` and their parts)."""
    for name in dir(obj):
        if name.startswith("_") or name[0].isupper():  # vis.Global & co. are the classes
            continue
        value = getattr(obj, name)
        if not callable(value):
            yield name, value


def _struct_copy(dst, src) -> None:
    for name, value in _struct_members(src):
        if isinstance(value, np.ndarray):
            getattr(dst, name)[...] = value
        elif isinstance(value, (bool, int, float)):
            setattr(dst, name, value)
        else:
            _struct_copy(getattr(dst, name), value)


def _digest(value) -> str:
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return f"{data.dtype.str}{data.shape}:" + hashlib.blake2b(data.view(np.uint8).ravel()).hexdigest()
    return np.asarray(value).tobytes().hex()


def _struct_dump(obj, prefix: str, out: dict[str, str]) -> None:
    for name, value in _struct_members(obj):
        if isinstance(value, (np.ndarray, bool, int, float)):
            out[prefix + name] = _digest(value)
        else:
            _struct_dump(value, prefix + name + ".", out)


def model_fingerprint(model) -> dict[str, str]:
    """Every field of an ``MjModel`` -- its sizes, its arrays (texture pixels included) and its
    ``opt``/``vis``/``stat`` structs -- as a digest of its bytes: two models with equal fingerprints
    hold the same numbers bit for bit."""
    out = {name: _digest(getattr(model, name)) for name in _model_arrays(type(model))}
    out.update({name: _digest(getattr(model, name)) for name in _model_sizes(type(model))})
    for name in ("opt", "vis", "stat"):
        _struct_dump(getattr(model, name), name + ".", out)
    return out


#: per key of :func:`_light_xml`: a fully compiled model whose texture pixels new envs copy
_TEMPLATES: dict[tuple[str, ...], object] = {}
_ARRAYS: dict[type, tuple[str, ...]] = {}
_SIZES: dict[type, tuple[str, ...]] = {}


def _model_arrays(cls: type) -> tuple[str, ...]:
    """The names of ``MjModel``'s array fields (its numpy-valued properties)."""
    if cls not in _ARRAYS:
        import mujoco

        probe = mujoco.MjModel.from_xml_string("<mujoco/>")
        _ARRAYS[cls] = tuple(
            n for n in dir(probe) if not n.startswith("_") and isinstance(getattr(probe, n), np.ndarray)
        )
        _SIZES[cls] = tuple(
            n for n in dir(probe) if n.startswith("n") and not n.startswith("_") and isinstance(getattr(probe, n), int)
        )
    return _ARRAYS[cls]


def _model_sizes(cls: type) -> tuple[str, ...]:
    _model_arrays(cls)
    return _SIZES[cls]


def _copy_model(src, dst) -> bool:
    """Copy every field of ``src`` but the texture pixels into ``dst``; False (nothing copied) when
    their sizes differ anywhere but in the texture data."""
    cls = type(dst)
    if any(getattr(src, n) != getattr(dst, n) for n in _model_sizes(cls) if n not in ("ntexdata", "nbuffer")):
        return False
    names = [n for n in _model_arrays(cls) if not n.startswith("tex_")]
    if any(getattr(src, n).shape != getattr(dst, n).shape for n in names):
        return False
    for n in names:
        getattr(dst, n)[...] = getattr(src, n)
    for n in ("opt", "vis", "stat"):
        _struct_copy(getattr(dst, n), getattr(src, n))
    return True


class _FastMujoco:
    """Stands for the ``mujoco`` module inside ``safety_gymnasium.world``: everything is mujoco's,
    except that ``MjModel.from_xml_string`` compiles the light XML for a task with fast resets on."""

    def __init__(self, mujoco, verify: bool):
        self._mujoco = mujoco
        self._verify = verify
        outer = self

        class MjModel:
            @staticmethod
            def from_xml_string(xml: str, *args, **kwargs):
                return outer.compile(xml, *args, **kwargs)

            def __new__(cls, *args, **kwargs):
                return mujoco.MjModel(*args, **kwargs)

        self.MjModel = MjModel

    def __getattr__(self, name: str):
        return getattr(self._mujoco, name)

    def compile(self, xml: str, *args, **kwargs):
        real = self._mujoco.MjModel.from_xml_string
        task = getattr(_tls, "task", None)
        if task is None or args or kwargs:
            return real(xml, *args, **kwargs)
        light, key = _light_xml(xml)
        world = task.world
        model = world.model if world is not None else None
        if model is None or getattr(task, "_deeprl_fast_key", None) != key:
            template = _TEMPLATES.get(key)
            if template is None:  # the first of its kind in this process: compile it all, keep a copy
                model = real(xml)
                _TEMPLATES[key] = copy.deepcopy(model)
                task._deeprl_fast_key = key
                FastResetStats.full += 1
                return model
            model = copy.deepcopy(template)  # ~0.1 s (mj_copyModel), the texture pixels included
            task._deeprl_fast_key = key
        if not _copy_model(real(light), model):
            FastResetStats.full += 1
            return real(xml)
        FastResetStats.fast += 1
        if self._verify:
            want, got = model_fingerprint(real(xml)), model_fingerprint(model)
            bad = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
            if bad:
                raise RuntimeError(f"fast reset: the model differs from a full compile in {bad[:8]}")
            FastResetStats.verified += 1
        return model


def _sample_layout(self) -> bool:
    """``RandomGenerator.sample_layout`` with the same draws in the same order and the same decisions:
    the distance test ``np.sqrt(np.sum(np.square(xy - other_xy))) < other_keepout + margin + keepout``
    in plain floats (the same IEEE operations in the same order: numpy sums 2 elements as
    ``0 + a + b``, both square roots are correctly rounded), without numpy's per-call overhead, which
    is most of a Button reset's rejection sampling (~13,000 draws a layout)."""
    layout = {}
    placed: list[tuple[float, float, float]] = []  # (x, y, its keepout + margin) of the placed objects
    margin = self.placements_margin
    for name, (placements, keepout) in self.placements.items():
        for _ in range(100):
            xy = self.draw_placement(placements, keepout)
            x, y = float(xy[0]), float(xy[1])
            for ox, oy, other in placed:
                dx, dy = x - ox, y - oy
                if math.sqrt(dx * dx + dy * dy) < other + keepout:
                    break
            else:
                break  # a valid placement
        else:
            return False  # conflicted 100 times: the caller draws a new layout
        layout[name] = xy
        placed.append((x, y, self.placements[name][1] + margin))
    self.layout = layout
    return True


def enable_fast_reset(env, verify: bool = False) -> bool:
    """Turn fast resets on for ``env`` (a ``safety_gymnasium.make`` env; see the module docstring);
    True when it has a navigation task to apply them to (False, nothing changed, otherwise).
    ``verify`` checks every fast reset against a full compile (process-wide, set by the first call)."""
    task = getattr(env.unwrapped, "task", None)
    if task is None or not hasattr(task, "_build") or not hasattr(task, "world"):
        return False
    from safety_gymnasium import world as world_module
    from safety_gymnasium.bases import underlying

    if not isinstance(world_module.mujoco, _FastMujoco):
        world_module.mujoco = _FastMujoco(world_module.mujoco, verify)
        build = underlying.Underlying._build

        def _build(self) -> None:  # the task's build: its compiles go through the light XML when on
            _tls.task = self if getattr(self, "_deeprl_fast_reset", False) else None
            try:
                build(self)
            finally:
                _tls.task = None

        underlying.Underlying._build = _build
    task._deeprl_fast_reset = True
    rng = task.random_generator
    rng.sample_layout = _sample_layout.__get__(rng)
    return True


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
    fast = [False]

    def make():
        env = safety_gymnasium.make(args.task, **kwargs)
        if not args.no_fast_reset:
            fast[0] = enable_fast_reset(env, verify=args.verify_fast_reset)
        return env

    slots = [Slot(make, resetter) for _ in range(args.n)]
    env0 = slots[0].envs[0]
    hello = {
        "observation_space": _space_json(env0.observation_space),
        "action_space": _space_json(env0.action_space),
        "max_episode_steps": getattr(env0.spec, "max_episode_steps", None),
        "numpy": np.__version__,
        "safety_gymnasium": getattr(safety_gymnasium, "__version__", "?"),
        "fast_reset": fast[0],
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
            if args.verify_fast_reset:
                print(
                    f"fast resets: {FastResetStats.fast} ({FastResetStats.verified} verified), "
                    f"full compiles: {FastResetStats.full}",
                    file=sys.stderr,
                    flush=True,
                )
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
    p.add_argument("--no-fast-reset", action="store_true")
    p.add_argument("--verify-fast-reset", action="store_true")
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
