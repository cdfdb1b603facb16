r"""The standard Atari preprocessing (Mnih et al. 2015; Machado et al. 2018), applied by env id to
every ``ALE/...`` env the suite builds (:func:`core_rl.common.envs.make_vec_env`).

From the raw ALE env (``frameskip=1``; the v5 sticky actions, p = 0.25, are kept) outwards:

1. :class:`AtariFrames` (gymnasium's ``AtariPreprocessing`` without its OpenCV dependency): up to 30
   no-op actions on reset, the action repeated for 4 frames with the reward summed and the
   observation the pixel-wise max of the last two frames (flicker), the grayscale screen resized to
   84×84 ``uint8`` by pixel-area averaging (OpenCV's ``INTER_AREA``);
2. :class:`GameScore`: the **true game score** — the unclipped sum of rewards of a whole game (all
   lives) and its length in agent steps, put in ``info["game_score"]``/``info["game_length"]`` on the
   game's last step;
3. :class:`EpisodicLife`: a lost life ends the episode for learning (``terminated``, ``info["life_lost"]``),
   while the game goes on (the next ``reset`` takes one no-op step instead of restarting);
4. :class:`FireReset`: in games that need FIRE to start (Breakout), FIRE after every reset;
5. :class:`ClipReward`: :math:`r \mapsto \operatorname{sign}(r) \in \{-1, 0, 1\}` for training;
6. :class:`gymnasium.wrappers.FrameStackObservation`: the last 4 frames, ``uint8[4, 84, 84]``; at
   an episode's start the first frame is repeated (``padding_type="reset"``).

The agents' episode statistics (:meth:`core_rl.common.base.Agent._track_episodes`) and evaluation
read ``game_score`` when an env reports it and skip ``life_lost`` ends, so the episode return an
Atari run logs is the game's true score, never the clipped per-life sum.
"""

from __future__ import annotations

from math import gcd
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import FrameStackObservation

from core_rl.common.errors import EnvError

ATARI_PREFIX = "ALE/"
GAME_SCORE, GAME_LENGTH, LIFE_LOST = "game_score", "game_length", "life_lost"


def is_atari_id(env_id: str) -> bool:
    """Whether ``env_id`` names an Arcade Learning Environment game (``ALE/Pong-v5``)."""
    return isinstance(env_id, str) and env_id.startswith(ATARI_PREFIX)


def register_ale() -> None:
    """Register the ``ALE/...`` ids with gymnasium (ale-py ships the ROMs), or say how to get them."""
    try:
        import ale_py
    except ImportError:
        raise EnvError(
            "Atari envs need ale-py: pip install 'deeprl-suite[atari]' (or pip install 'ale-py>=0.9')"
        ) from None
    gym.register_envs(ale_py)


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    r"""Pixel-area downsampling along one axis as a matrix ``[n_out, n_in]``: output pixel j averages the input
    interval :math:`[j\,n_{in}/n_{out}, (j+1)\,n_{in}/n_{out})`, partial pixels weighted by their overlap
    (each row sums to 1)."""
    scale = n_in / n_out
    lo = np.arange(n_out)[:, None] * scale
    left = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(lo + scale, left + 1) - np.maximum(lo, left), 0.0, None) / scale
    return overlap.astype(np.float32)


class AreaResize:
    """``image [H, W] uint8`` → ``[h, w] uint8`` by pixel-area averaging (OpenCV's ``INTER_AREA``; equal to it
    but for a rounding of ±1 on about 0.1 % of the pixels of Atari frames).

    The intervals repeat with a period of ``H / gcd(H, h)`` input rows for ``h / gcd(H, h)`` output rows (Atari's
    210 → 84: 5 rows → 2; 160 → 84: 40 columns → 21), so each axis is one small matrix applied to every period
    (a batched matmul over the reshaped image): 31 µs per 210×160 frame against 65 µs for per-pixel taps
    gathered by index, and 51 µs for OpenCV (one core, 2026-12-05)."""

    def __init__(self, height: int, width: int, out_height: int, out_width: int):
        self.shape, self.out_shape = (int(height), int(width)), (int(out_height), int(out_width))
        g_rows, g_cols = gcd(height, out_height), gcd(width, out_width)
        self.row_period, self.col_period = height // g_rows, width // g_cols
        self.rows = area_weights(self.row_period, out_height // g_rows)  # [p_out, p_in]
        self.cols_t = np.ascontiguousarray(area_weights(self.col_period, out_width // g_cols).T)  # [p_in, p_out]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        width, (out_height, out_width) = self.shape[1], self.out_shape
        x = image.astype(np.float32).reshape(-1, self.row_period, width)  # [periods, p_in, W]
        tall = (self.rows @ x).reshape(out_height, width)
        small = (tall.reshape(out_height, -1, self.col_period) @ self.cols_t).reshape(out_height, out_width)
        return np.clip(np.rint(small), 0, 255).astype(np.uint8)


class AtariFrames(gym.Wrapper):
    """No-op reset, frame skip with max-pooling, grayscale, area resize (module docstring, step 1);
    observations ``uint8[screen_size, screen_size]``. The wrapped env must have ``frameskip=1``."""

    def __init__(self, env: gym.Env, noop_max: int = 30, frame_skip: int = 4, screen_size: int = 84):
        super().__init__(env)
        self.ale = env.unwrapped.ale
        # the ALE action of each action index: the frames are stepped on the emulator directly, as the raw
        # env's own step does for frameskip=1 (the same act, sticky actions and end checks), without rendering
        # an RGB observation per frame that this wrapper would throw away (~40 % of its time per agent step)
        base = env.unwrapped
        direct = int(getattr(base, "_frameskip", 0)) == 1 and not getattr(base, "continuous", False)
        self._action_set = list(base._action_set) if direct and hasattr(base, "_action_set") else None
        self.noop_max, self.frame_skip, self.screen_size = int(noop_max), int(frame_skip), int(screen_size)
        height, width = self.ale.getScreenDims()
        self.buffer = np.zeros((2, height, width), dtype=np.uint8)
        self.resize = AreaResize(height, width, self.screen_size, self.screen_size)
        self.observation_space = gym.spaces.Box(0, 255, (self.screen_size, self.screen_size), np.uint8)

    def _obs(self) -> np.ndarray:
        frame = np.maximum(self.buffer[0], self.buffer[1]) if self.frame_skip > 1 else self.buffer[0]
        return self.resize(frame)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._action_set is not None:
            return self._step_emulator(action)
        total, terminated, truncated, info = 0.0, False, False, {}
        for t in range(self.frame_skip):
            _, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            self._grab(t)
            if terminated or truncated:
                break
        return self._obs(), total, terminated, truncated, info

    def _grab(self, t: int) -> None:
        """The screen of frame t of the skip into the max-pool's buffer, if it is one of the last two. Called
        before the end check, so that a game's last observation is the screen it ended on (as SB3's
        ``MaxAndSkipEnv`` keeps it), not the previous step's."""
        if t == self.frame_skip - 2:
            self.ale.getScreenGrayscale(self.buffer[1])
        elif t == self.frame_skip - 1:
            self.ale.getScreenGrayscale(self.buffer[0])

    def _step_emulator(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """:meth:`step` on the emulator: per frame what ale-py's ``AtariEnv.step`` does with frameskip=1
        (``act`` the action's ALE action at full strength, then the game-over and truncation checks), and
        its info (lives, frame numbers) after the last frame."""
        ale, ale_action = self.ale, self._action_set[int(action)]  # type: ignore[index]
        total, terminated, truncated = 0.0, False, False
        for t in range(self.frame_skip):
            total += float(ale.act(ale_action, 1.0))
            terminated, truncated = ale.game_over(with_truncation=False), ale.game_truncated()
            self._grab(t)
            if terminated or truncated:
                break
        info = {
            "lives": ale.lives(),
            "episode_frame_number": ale.getEpisodeFrameNumber(),
            "frame_number": ale.getFrameNumber(),
        }
        return self._obs(), total, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        _, info = self.env.reset(**kwargs)
        noops = int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        for _ in range(noops):
            _, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                _, info = self.env.reset(**kwargs)
        self.ale.getScreenGrayscale(self.buffer[0])
        self.buffer[1].fill(0)
        return self._obs(), info


class GameScore(gym.Wrapper):
    """Adds the unclipped score and the length (in steps of this wrapper) of the whole game to the
    info of the game's last step (``terminated`` or ``truncated`` by the game itself)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.score, self.length = 0.0, 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.score, self.length = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        self.length += 1
        if terminated or truncated:
            info = {**info, GAME_SCORE: self.score, GAME_LENGTH: self.length}
        return obs, reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """A lost life is a terminal state for learning; the game itself continues (Mnih et al. 2015).

    ``reset`` after a life loss does not restart the game: it takes one no-op step from where the
    game stands (and resets for real once the game is over)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def _lives(self) -> int:
        return int(self.env.unwrapped.ale.lives())

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = self._lives()
        if 0 < lives < self.lives and not self.game_over:
            terminated = True
            info = {**info, LIFE_LOST: True}
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:  # the no-op ended the game: start a new one
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self._lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Presses FIRE after every reset, in games whose action 1 is FIRE (they wait for it to start)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        if len(meanings) < 3 or meanings[1] != "FIRE":
            raise EnvError(f"FireReset needs a game whose action 1 is FIRE, got {meanings}")

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


class ClipReward(gym.RewardWrapper):
    """r ↦ sign(r): every game's rewards on one scale for learning (the true score is kept by
    :class:`GameScore`, below this wrapper)."""

    def reward(self, reward: SupportsFloat) -> float:
        return float(np.sign(float(reward)))


def make_atari_env(
    env_id: str,
    noop_max: int = 30,
    frame_skip: int = 4,
    screen_size: int = 84,
    frame_stack: int = 4,
    episodic_life: bool = True,
    clip_reward: bool = True,
    fire_reset: bool = True,
    **make_kwargs: Any,
) -> gym.Env:
    """``env_id`` with the standard preprocessing (module docstring); ``make_kwargs`` go to ``gym.make``
    (e.g. ``repeat_action_probability``). Observations: ``uint8[frame_stack, screen_size, screen_size]``."""
    register_ale()
    if frame_skip < 1 or frame_stack < 1 or screen_size < 1 or noop_max < 0:
        raise EnvError(
            f"Atari preprocessing needs frame_skip, frame_stack, screen_size ≥ 1 and noop_max ≥ 0, got "
            f"frame_skip={frame_skip}, frame_stack={frame_stack}, screen_size={screen_size}, noop_max={noop_max}"
        )
    try:
        env = gym.make(env_id, frameskip=1, **make_kwargs)
    except gym.error.Error as exc:
        raise EnvError(f"unknown Atari env id '{env_id}' ({exc})") from None
    env = AtariFrames(env, noop_max=noop_max, frame_skip=frame_skip, screen_size=screen_size)
    env = GameScore(env)
    if episodic_life:
        env = EpisodicLife(env)
    meanings = env.unwrapped.get_action_meanings()
    if fire_reset and len(meanings) >= 3 and meanings[1] == "FIRE":
        env = FireReset(env)
    if clip_reward:
        env = ClipReward(env)
    return FrameStackObservation(env, frame_stack)


def episode_end(info: dict[str, Any] | None, i: int) -> tuple[bool, float | None, int | None]:
    """For env ``i`` of a SAME_STEP vector env's step that ended an episode: whether it was a life
    loss only (:class:`EpisodicLife`; the game goes on), and the game's true score and length when
    the env reports them (:class:`GameScore`; else None)."""
    final = (info or {}).get("final_info")
    if not isinstance(final, dict):
        return False, None, None

    def get(key: str) -> Any:
        mask = final.get(f"_{key}")
        if key in final and mask is not None and bool(np.asarray(mask)[i]):
            return np.asarray(final[key])[i]
        return None

    lost = get(LIFE_LOST)
    score, length = get(GAME_SCORE), get(GAME_LENGTH)
    return (
        bool(lost) if lost is not None else False,
        None if score is None else float(score),
        None if length is None else int(length),
    )


__all__ = [
    "AreaResize",
    "AtariFrames",
    "ClipReward",
    "EpisodicLife",
    "FireReset",
    "GameScore",
    "episode_end",
    "is_atari_id",
    "make_atari_env",
    "register_ale",
]
