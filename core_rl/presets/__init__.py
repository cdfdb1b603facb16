"""Per-environment presets: RL-Zoo's published hyperparameters, picked by algo and env id.

The values are data, ``core_rl/presets/rl_zoo/<algo>.yml``: RL-Zoo's entries (DLR-RM/rl-baselines3-zoo,
``hyperparams/<algo>.yml``; each file names the commit and URL it was copied from) in SB3's names.
:mod:`core_rl.presets.zoo_mapping` maps a record field by field onto our config (the same mapping
the benchmarks use). A preset is named ``rl-zoo/<algo>/<zoo key>``, e.g. ``rl-zoo/dqn/CartPole-v1``,
``rl-zoo/sac/HalfCheetah-v4``, ``rl-zoo/ppo/atari``.

An env id finds its Zoo key (:func:`zoo_key`) exactly, else by name across versions
(``HalfCheetah-v5`` → RL-Zoo's ``HalfCheetah-v4``, the closest version), and an Atari id
(``ALE/Pong-v5``, ``PongNoFrameskip-v4``) finds ``atari``. ``deeprl train`` and
:func:`core_rl.make_agent` resolve ``preset="auto"`` this way (``"none"``: our own defaults;
a preset name: that preset; a file: a pasted RL-Zoo entry); the user's config applies on top, and
a run's params record ``preset`` (the name, ``file:<path>``, or ``none``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from core_rl.common.config import zoo_conventions
from core_rl.common.errors import ConfigError
from core_rl.presets.zoo_mapping import MapRow, field_mapping, ours_config, zoo_params

DATA = Path(__file__).parent / "rl_zoo"
#: algorithms with RL-Zoo presets (one data file each)
ZOO_ALGOS = ("ppo", "a2c", "dqn", "sac", "td3", "ddpg")
PREFIX = "rl-zoo"
NONE = "none"
AUTO = "auto"
_ATARI = re.compile(r"^(ALE/.+-v\d+|.+NoFrameskip-v\d+)$")
_VERSION = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)$")


@dataclass(frozen=True)
class Preset:
    """One RL-Zoo entry for one algorithm, mapped onto our config."""

    algo: str
    zoo_key: str  # RL-Zoo's key: an env id of its own (e.g. HalfCheetah-v4) or "atari"
    hyperparams: Mapping[str, Any]  # the entry as RL-Zoo publishes it (SB3 names)
    source: str  # the URL of the data file at the commit it was copied from (or a user's file)
    commit: str
    params: Mapping[str, Any] = field(repr=False)  # RL-Zoo's entry over SB3's defaults, flattened
    config: Mapping[str, Any] = field(repr=False)  # our config fields
    from_file: bool = False  # a user's RL-Zoo entry (``--preset FILE``), not the shipped data

    @property
    def name(self) -> str:
        return f"file:{self.source}" if self.from_file else f"{PREFIX}/{self.algo}/{self.zoo_key}"

    @property
    def n_timesteps(self) -> int:
        """RL-Zoo's budget for this entry (``deeprl train``'s default ``--steps`` with this preset)."""
        return int(float(self.params["n_timesteps"]))

    def rows(self) -> list[MapRow]:
        """The field-by-field mapping (SB3 field, value, our fields, note)."""
        return field_mapping(self.algo, self.params)


@cache
def _table(algo: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((DATA / f"{algo}.yml").read_text())


def zoo_keys(algo: str) -> list[str]:
    """RL-Zoo's keys with a preset for ``algo`` (empty for an algorithm without presets)."""
    return list(_table(algo)["envs"]) if algo in ZOO_ALGOS else []


def zoo_key(algo: str, env_id: str) -> str | None:
    """RL-Zoo's key for ``env_id`` (exact; ``atari`` for an Atari id; else the same env name at the
    closest version), or None."""
    keys = zoo_keys(algo)
    if env_id in keys:
        return env_id
    if _ATARI.match(env_id):
        return "atari" if "atari" in keys else None
    m = _VERSION.match(env_id)
    if m is None:
        return None
    same = [
        (abs(int(v["version"]) - int(m["version"])), k)
        for k in keys
        if (v := _VERSION.match(k)) and v["name"] == m["name"]
    ]
    return min(same)[1] if same else None


@cache
def _preset(algo: str, key: str) -> Preset:
    table = _table(algo)
    entry = table["envs"][key]
    params = zoo_params(algo, entry)
    return Preset(algo, key, entry, table["source"], table["commit"], params, ours_config(algo, params))


def find_preset(algo: str, env_id: str) -> Preset | None:
    """The preset of ``algo`` for ``env_id``, or None if RL-Zoo has no entry for it."""
    key = zoo_key(algo, env_id)
    return None if key is None else _preset(algo, key)


def preset_names(algo: str | None = None) -> list[str]:
    """Every preset's name (of one algorithm, if given)."""
    algos = ZOO_ALGOS if algo is None else [algo]
    return [f"{PREFIX}/{a}/{k}" for a in algos for k in zoo_keys(a)]


def preset_from_file(algo: str, path: str | Path) -> Preset:
    """A user's RL-Zoo entry as a preset: a YAML/JSON/TOML file holding one entry in RL-Zoo's form,
    either ``{env key: {field: value}}`` (pasted from ``hyperparams/<algo>.yml``) or the fields alone."""
    from core_rl.common.config import load_config_file

    data = load_config_file(path)
    if len(data) == 1 and isinstance(next(iter(data.values())), Mapping):
        key, entry = next(iter(data.items()))
    else:
        key, entry = Path(path).stem, data
    params = zoo_params(algo, entry)
    return Preset(algo, str(key), entry, str(path), "", params, ours_config(algo, params), from_file=True)


def get_preset(name: str) -> Preset:
    """The preset called ``rl-zoo/<algo>/<key>`` (the key: RL-Zoo's, or an env id that finds it)."""
    parts = name.split("/", 2)
    if len(parts) == 3 and parts[0] == PREFIX and parts[1] in ZOO_ALGOS:
        key = zoo_key(parts[1], parts[2])
        if key is not None:
            return _preset(parts[1], key)
    algo = parts[1] if len(parts) > 1 and parts[1] in ZOO_ALGOS else None
    known = ", ".join(preset_names(algo))
    raise ConfigError(f"unknown preset '{name}'; known: {NONE}, {AUTO}, {known}")


def resolve_preset(algo: str, env_id: Any, preset: str | None = AUTO) -> Preset | None:
    """The preset a run of ``algo`` on ``env_id`` uses: ``"auto"`` finds it by env id (None if there
    is none, or the env is not given by id), ``"none"``/None opts out, a name picks that preset
    (it must be for ``algo``), a ``.yml``/``.json``/``.toml`` path reads a pasted RL-Zoo entry
    (:func:`preset_from_file`)."""
    if preset is None or preset == NONE:
        return None
    if preset == AUTO:
        return find_preset(algo, env_id) if isinstance(env_id, str) else None
    if Path(preset).suffix in (".yml", ".yaml", ".json", ".toml"):
        return preset_from_file(algo, preset)
    found = get_preset(preset)
    if found.algo != algo:
        raise ConfigError(f"preset '{preset}' is for {found.algo}, not {algo}")
    return found


def apply_preset(
    algo: str, env_id: Any, config: Mapping[str, Any] | None = None, preset: str | None = AUTO
) -> tuple[dict[str, Any], Preset | None]:
    """``(config, preset)``: the preset's fields with ``config`` on top (``config`` alone without one).

    ``config``'s RL-Zoo conventions are read first (``net_arch`` → ``hidden_sizes``, ``lin_<x0>`` →
    the value and its schedule), so that they override the preset's fields they stand for."""
    found = resolve_preset(algo, env_id, preset)
    user = dict(config or {})
    if found is None:
        return user, None
    from core_rl.registry import get_algo

    try:
        user = zoo_conventions(user, get_algo(algo).cls.config_cls.schedule_fields)
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    return {**found.config, **user}, found


def preset_param(preset: Preset | None) -> str:
    """What a run's ``preset`` param says: the preset's name, or ``none``."""
    return preset.name if preset is not None else NONE
