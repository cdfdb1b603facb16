"""RL-Zoo / Stable-Baselines3 hyperparameters mapped field by field onto our configs.

One mapping, used by the presets (:mod:`core_rl.presets`) and by the side-by-side benchmarks
(``benchmarks/``). A record is RL-Zoo's entry over SB3's constructor defaults (:data:`SB3_DEFAULTS`,
written out so that every field that shapes training is mapped, not only those RL-Zoo sets), in
SB3's names, ``policy_kwargs`` flattened (:func:`zoo_params`). :func:`field_mapping` turns each field
into the fields of our config it sets (a :class:`MapRow`, with a note where the two differ) and
raises on a field it has no row for; :func:`ours_config` is their union.

Conventions carried over as they are: ``lin_<x0>`` schedules (``lr_schedule``/``clip_schedule``),
``gradient_steps=-1``, DQN's ``target_update_interval`` in env steps (``target_update_unit``),
``normalize`` (observation and reward normalization, on-policy), gSDE (``use_sde``,
``sde_sample_freq``, ``log_std_init``).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core_rl.common.config import net_arch_sizes
from core_rl.common.errors import ConfigError
from core_rl.common.schedules import parse_schedule

_POLICY = dict(net_arch=(64, 64), activation_fn="Tanh", ortho_init=True, log_std_init=0.0)
_ZOO_ONLY = dict(n_envs=1, n_timesteps=1_000_000, policy="MlpPolicy")

#: SB3 2.x constructor defaults (and MlpPolicy's ``policy_kwargs``), plus RL-Zoo's own keys
#: (``n_envs``, ``n_timesteps``, ``policy``, ``normalize``; TD3/DDPG's ``noise_type``/``noise_std``)
SB3_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": dict(
        learning_rate=3e-4,
        n_steps=2048,
        batch_size=64,
        n_epochs=10,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        clip_range_vf=None,
        normalize_advantage=True,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        use_sde=False,
        sde_sample_freq=-1,
        target_kl=None,
        normalize=False,
        **_POLICY,
        optimizer_class="Adam",
        **_ZOO_ONLY,
    ),
    "a2c": dict(
        learning_rate=7e-4,
        n_steps=5,
        gamma=0.99,
        gae_lambda=1.0,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        rms_prop_eps=1e-5,
        use_rms_prop=True,
        use_sde=False,
        sde_sample_freq=-1,
        normalize_advantage=False,
        normalize=False,
        **_POLICY,
        optimizer_class="RMSprop",
        optimizer_kwargs=None,
        **_ZOO_ONLY,
    ),
    "dqn": dict(
        learning_rate=1e-4,
        buffer_size=1_000_000,
        learning_starts=100,
        batch_size=32,
        tau=1.0,
        gamma=0.99,
        train_freq=4,
        gradient_steps=1,
        n_steps=1,
        target_update_interval=10_000,
        exploration_fraction=0.1,
        exploration_initial_eps=1.0,
        exploration_final_eps=0.05,
        max_grad_norm=10.0,
        optimize_memory_usage=False,
        net_arch=(64, 64),
        activation_fn="ReLU",
        optimizer_class="Adam",
        **_ZOO_ONLY,
    ),
    "sac": dict(
        learning_rate=3e-4,
        buffer_size=1_000_000,
        learning_starts=100,
        batch_size=256,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        n_steps=1,
        ent_coef="auto",
        target_update_interval=1,
        target_entropy="auto",
        use_sde=False,
        sde_sample_freq=-1,
        use_sde_at_warmup=False,
        log_std_init=-3.0,
        net_arch=(256, 256),
        activation_fn="ReLU",
        optimizer_class="Adam",
        **_ZOO_ONLY,
    ),
    "td3": dict(
        learning_rate=1e-3,
        buffer_size=1_000_000,
        learning_starts=100,
        batch_size=256,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        n_steps=1,
        noise_type=None,
        noise_std=0.0,
        policy_delay=2,
        target_policy_noise=0.2,
        target_noise_clip=0.5,
        net_arch=(400, 300),
        activation_fn="ReLU",
        optimizer_class="Adam",
        **_ZOO_ONLY,
    ),
    "ddpg": dict(
        learning_rate=1e-3,
        buffer_size=1_000_000,
        learning_starts=100,
        batch_size=256,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        n_steps=1,
        noise_type=None,
        noise_std=0.0,
        net_arch=(400, 300),
        activation_fn="ReLU",
        optimizer_class="Adam",
        **_ZOO_ONLY,
    ),
}
#: RL-Zoo keys that describe the env, not the agent (the env factory's business)
ENV_SIDE = ("env_wrapper", "frame_stack")


@dataclass(frozen=True)
class MapRow:
    """One SB3/RL-Zoo field (or a fixed SB3 behaviour, named in parentheses) and the fields of ours it sets."""

    sb3: str
    value: Any
    ours: Mapping[str, Any]
    note: str = ""


#: SB3's off-policy networks (DQN's QNetwork, SAC's, TD3's and DDPG's actors and critics) keep PyTorch's nn.Linear
#: init (no orthogonal init, no small output gain), and RL-Zoo tuned their hyperparameters with it. With our
#: orthogonal default DQN's CartPole training return was lower than SB3's, and TD3 on HalfCheetah-v5 (300k steps,
#: seeds 0 and 2) ended 1,029 and 1,373 lower than with this init (eval 7,051 / 5,902 against 8,080 / 7,275).
_SB3_LINEAR_INIT = MapRow(
    "(fixed) init",
    "nn.Linear default",
    {"init": "torch_default"},
    "SB3's networks keep PyTorch's init: W, b ~ U(±1/√fan_in) (ours' default is orthogonal)",
)


def _literal(node: ast.AST) -> Any:
    """A ``policy_kwargs`` expression node as data: ``dict(...)``, lists, numbers, strings, and names
    (``nn.ReLU`` → ``"ReLU"``, ``RMSpropTFLike`` → ``"RMSpropTFLike"``); nothing is executed."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    raise ValueError(f"unsupported expression {ast.dump(node)[:80]}")


def parse_kwargs(text: str | Mapping[str, Any] | None, field: str = "policy_kwargs") -> dict[str, Any]:
    """RL-Zoo's ``"dict(log_std_init=-2, net_arch=dict(pi=[64], vf=[64]))"`` (or a mapping) as a dict."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    try:
        value = _literal(ast.parse(str(text).strip(), mode="eval").body)
    except (SyntaxError, ValueError) as exc:
        raise ConfigError(f"RL-Zoo field '{field}': cannot read {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"RL-Zoo field '{field}': expected dict(...), got {text!r}")
    return value


def zoo_params(algo: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """RL-Zoo's ``entry`` over :data:`SB3_DEFAULTS` (``policy_kwargs`` flattened into its fields);
    a field SB3 does not have raises :class:`ConfigError` naming it."""
    if algo not in SB3_DEFAULTS:
        raise ConfigError(f"no RL-Zoo mapping for algo '{algo}'; mapped: {', '.join(SB3_DEFAULTS)}")
    flat = {k: v for k, v in entry.items() if k != "policy_kwargs"}
    for key, value in parse_kwargs(entry.get("policy_kwargs")).items():
        flat[key] = tuple(value) if key == "net_arch" and isinstance(value, list) and not _has_dict(value) else value
    known = set(SB3_DEFAULTS[algo]) | set(ENV_SIDE)
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"RL-Zoo {algo} field(s) {unknown} have no mapping onto our config")
    defaults = dict(SB3_DEFAULTS[algo])
    if flat.get("policy") == "CnnPolicy":
        # SB3 puts no hidden layer after its NatureCNN (ActorCriticPolicy's and DQNPolicy's net_arch=[]),
        # the 64-64 MLP is MlpPolicy's default only
        defaults["net_arch"] = ()
    return {**defaults, **flat}


def _has_dict(value: list) -> bool:
    return any(isinstance(v, Mapping) for v in value)


def _float(value: Any) -> float:
    return float(value)


def _schedule(name: str, value: Any, ours: str, companion: str) -> MapRow:
    parsed = parse_schedule(value, name)
    if parsed is None:
        return MapRow(name, value, {ours: _float(value), companion: "constant"})
    return MapRow(name, value, {ours: parsed[0], companion: "linear"}, "lin_x₀: x₀·(1 − t/T), as SB3's schedule")


def _normalize(value: Any) -> tuple[bool, bool]:
    if isinstance(value, str) and value.strip().startswith("{"):
        kw = parse_kwargs(value, "normalize")
        return bool(kw.get("norm_obs", True)), bool(kw.get("norm_reward", True))
    if isinstance(value, Mapping):
        return bool(value.get("norm_obs", True)), bool(value.get("norm_reward", True))
    return bool(value), bool(value)


_ACTIVATIONS = {"ReLU": "relu", "Tanh": "tanh", "ELU": "elu", "GELU": "gelu"}


def _common_rows(algo: str, p: Mapping[str, Any]) -> list[MapRow]:
    act = p["activation_fn"]
    if act not in _ACTIVATIONS:
        raise ConfigError(f"RL-Zoo field 'activation_fn': {act} has no counterpart (ours: {', '.join(_ACTIVATIONS)})")
    rows = [
        _schedule("learning_rate", p["learning_rate"], "lr", "lr_schedule"),
        MapRow("gamma", p["gamma"], {"gamma": _float(p["gamma"])}),
        MapRow("n_envs", p["n_envs"], {"n_envs": int(p["n_envs"])}),
        MapRow(
            "net_arch",
            p["net_arch"],
            {"hidden_sizes": net_arch_sizes(p["net_arch"])},
            "one width list for every network (actor, critic(s), Q-net)",
        ),
        MapRow("activation_fn", act, {"activation": _ACTIVATIONS[act]}),
        MapRow("n_timesteps", p["n_timesteps"], {}, "the preset's default budget (deeprl train without --steps)"),
        MapRow(
            "policy",
            p["policy"],
            {},
            "MlpPolicy: MLPs over the flat observation; CnnPolicy: image observations (the agent's encoder)",
        ),
    ]
    for key in ENV_SIDE:
        if key in p:
            rows.append(MapRow(key, p[key], {}, "env side: the env's preprocessing, not an agent field"))
    return rows


def _on_policy_rows(algo: str, p: Mapping[str, Any]) -> list[MapRow]:
    norm_obs, norm_reward = _normalize(p["normalize"])
    rows = [
        MapRow("n_steps", p["n_steps"], {"n_steps": int(p["n_steps"])}, "steps per env per rollout"),
        MapRow("gae_lambda", p["gae_lambda"], {"advantage": "gae", "gae_lambda": _float(p["gae_lambda"])}),
        MapRow("ent_coef", p["ent_coef"], {"ent_coef": _float(p["ent_coef"])}),
        MapRow("vf_coef", p["vf_coef"], {"vf_coef": _float(p["vf_coef"])}),
        MapRow("max_grad_norm", p["max_grad_norm"], {"max_grad_norm": _float(p["max_grad_norm"])}),
        MapRow(
            "normalize_advantage", p["normalize_advantage"], {"normalize_advantage": bool(p["normalize_advantage"])}
        ),
        MapRow(
            "normalize",
            p["normalize"],
            {"normalize_obs": norm_obs, "normalize_reward": norm_reward},
            "VecNormalize: running mean/std of observations, returns-scaled rewards",
        ),
        MapRow("use_sde", p["use_sde"], {"use_sde": bool(p["use_sde"])}, "gSDE (core_rl.common.distributions)"),
        MapRow("sde_sample_freq", p["sde_sample_freq"], {"sde_sample_freq": int(p["sde_sample_freq"])}),
        MapRow("log_std_init", p["log_std_init"], {"log_std_init": _float(p["log_std_init"])}),
        MapRow("ortho_init", p["ortho_init"], {}, "ours always initializes orthogonally (SB3's ortho_init=True)"),
    ]
    if algo == "ppo":
        vf = p["clip_range_vf"]
        rows += [
            MapRow("batch_size", p["batch_size"], {"batch_size": int(p["batch_size"])}, "minibatch size"),
            MapRow("n_epochs", p["n_epochs"], {"n_epochs": int(p["n_epochs"])}),
            _schedule("clip_range", p["clip_range"], "clip_range", "clip_schedule"),
            MapRow("clip_range_vf", vf, {"clip_range_vf": None if vf is None else _float(vf)}),
            MapRow(
                "target_kl", p["target_kl"], {"target_kl": None if p["target_kl"] is None else _float(p["target_kl"])}
            ),
            MapRow("optimizer_class", p["optimizer_class"], {}, "torch Adam, eps 1e-5, both"),
        ]
    else:
        opt_kw = parse_kwargs(p["optimizer_kwargs"], "optimizer_kwargs")
        rms = bool(p["use_rms_prop"]) or str(p["optimizer_class"]).startswith("RMSprop")
        eps = _float(opt_kw.get("eps", p["rms_prop_eps"]))
        rows += [
            MapRow("use_rms_prop", p["use_rms_prop"], {"optimizer": "rmsprop" if rms else "adam"}),
            MapRow("rms_prop_eps", p["rms_prop_eps"], {"rms_eps": eps}),
            MapRow(
                "optimizer_class",
                p["optimizer_class"],
                {},
                "RMSpropTFLike: ours is torch RMSprop (ε outside the square root)"
                if p["optimizer_class"] == "RMSpropTFLike"
                else "",
            ),
            MapRow("optimizer_kwargs", p["optimizer_kwargs"], {}, "eps → rms_eps" if opt_kw else ""),
            MapRow("(fixed) RMSprop α", 0.99, {"rms_alpha": 0.99}),
            MapRow("(fixed) one value step per batch", 1, {"value_epochs": 1, "n_step": int(p["n_steps"])}),
        ]
    return rows


def _off_policy_rows(algo: str, p: Mapping[str, Any]) -> list[MapRow]:
    same = lambda name, ours=None, cast=int, note="": MapRow(name, p[name], {ours or name: cast(p[name])}, note)  # noqa: E731
    rows = [
        same("buffer_size"),
        same("learning_starts"),
        same("batch_size"),
        same("tau", cast=_float),
        same("train_freq", note="vector-env steps between training phases"),
        same("gradient_steps", note="-1: as many as env steps collected"),
        same("n_steps", "n_step"),
    ]
    if algo == "dqn":
        rows += [
            MapRow(
                "target_update_interval",
                p["target_update_interval"],
                {"target_update_interval": int(p["target_update_interval"]), "target_update_unit": "env_steps"},
                "in env steps, as SB3's DQN counts it (every interval // n_envs vector steps)",
            ),
            same("exploration_fraction", cast=_float, note="ε decays linearly over this fraction of the run"),
            same("exploration_initial_eps", cast=_float),
            same("exploration_final_eps", cast=_float),
            same("max_grad_norm", cast=_float),
            MapRow("optimize_memory_usage", p["optimize_memory_usage"], {}, "a replay memory layout, not a result"),
            MapRow("optimizer_class", p["optimizer_class"], {"optimizer": "adam"}, "torch Adam (eps 1e-8) both"),
            MapRow("(fixed) loss", "smooth_l1_loss", {"loss": "huber", "huber_delta": 1.0}),
            _SB3_LINEAR_INIT,
            MapRow(
                "(fixed) vanilla DQN",
                "ε-greedy; max_a Q_φ' target; uniform replay",
                {"exploration": "epsilon", "double_q": False, "dueling": False, "prioritized": False},
            ),
        ]
    elif algo == "sac":
        ent = p["ent_coef"]
        init = float(ent.split("_", 1)[1]) if isinstance(ent, str) and ent.startswith("auto_") else 1.0
        if p["use_sde_at_warmup"]:
            raise ConfigError("RL-Zoo field 'use_sde_at_warmup': ours explores uniformly during learning_starts")
        rows += [
            MapRow(
                "ent_coef",
                ent,
                {"ent_coef": "auto" if str(ent).startswith("auto") else _float(ent), "init_ent_coef": init},
                "'auto' starts α at 1.0 ('auto_0.1': at 0.1), tuned by Adam on log α",
            ),
            MapRow(
                "target_entropy",
                p["target_entropy"],
                {
                    "target_entropy": p["target_entropy"]
                    if p["target_entropy"] == "auto"
                    else _float(p["target_entropy"])
                },
                "'auto' = −|A|",
            ),
            MapRow(
                "target_update_interval",
                p["target_update_interval"],
                {"target_update_interval": int(p["target_update_interval"]), "target_update_unit": "gradient_steps"},
                "in gradient steps, as SB3's SAC counts it",
            ),
            MapRow("use_sde", p["use_sde"], {"use_sde": bool(p["use_sde"])}, "gSDE (core_rl.common.distributions)"),
            same("sde_sample_freq"),
            MapRow("use_sde_at_warmup", p["use_sde_at_warmup"], {}, "off: uniform actions during learning_starts"),
            same("log_std_init", cast=_float, note="gSDE's initial log σ (used with use_sde)"),
            MapRow("optimizer_class", p["optimizer_class"], {}, "torch Adam for actor, critics and log α"),
            _SB3_LINEAR_INIT,
            MapRow("(fixed) critics", "2 Q-nets, min for target and actor", {"n_critics": 2}),
            MapRow("(fixed) log σ clamp", "[-20, 2]", {"log_std_min": -20.0, "log_std_max": 2.0}),
            MapRow("(fixed) gradient clipping", "none", {"max_grad_norm": None}),
        ]
    else:  # td3, ddpg (SB3's DDPG is its TD3 with one critic, no delay, no target smoothing)
        noise_types = {"normal": "gaussian", "ornstein-uhlenbeck": "ou", None: "gaussian"}
        if p["noise_type"] not in noise_types:
            raise ConfigError(f"RL-Zoo field 'noise_type': {p['noise_type']!r} (ours: normal, ornstein-uhlenbeck)")
        rows += [
            _SB3_LINEAR_INIT,
            MapRow(
                "noise_type",
                p["noise_type"],
                {"exploration_noise": noise_types[p["noise_type"]]},
                "added to the action scaled to [-1, 1], then clipped (OU: θ 0.15, dt 0.01 both)",
            ),
            MapRow("noise_std", p["noise_std"], {"noise_std": _float(p["noise_std"])}, "σ in units of the half-width"),
            MapRow(
                "optimizer_class", p["optimizer_class"], {"actor_lr": None}, "one Adam step size for actor, critics"
            ),
            MapRow("(fixed) gradient clipping", "none", {"max_grad_norm": None}),
            MapRow("(fixed) target update", "Polyak τ after every delayed actor step", {"target_update_interval": 1}),
        ]
        if algo == "td3":
            rows += [
                same("policy_delay"),
                same("target_policy_noise", "target_noise", cast=_float),
                same("target_noise_clip", cast=_float),
                MapRow("(fixed) critics", "2 Q-nets; actor ascends Q_1", {"n_critics": 2}),
            ]
        else:
            rows.append(
                MapRow(
                    "(fixed) DDPG",
                    "1 critic, no delay, no target smoothing",
                    {"n_critics": 1, "policy_delay": 1, "target_noise": 0.0},
                )
            )
    return rows


def field_mapping(algo: str, params: Mapping[str, Any]) -> list[MapRow]:
    """Every field of ``params`` (a :func:`zoo_params` record) and the fields of our config it sets;
    raises :class:`ConfigError` if a field has no row."""
    rows = _common_rows(algo, params)
    rows += _on_policy_rows(algo, params) if algo in ("ppo", "a2c") else _off_policy_rows(algo, params)
    if algo not in ("ppo", "a2c") and params.get("normalize"):
        raise ConfigError(f"RL-Zoo field 'normalize': our {algo} has no observation normalization")
    unmapped = set(params) - {r.sb3 for r in rows} - {"normalize"}
    if unmapped:
        raise ConfigError(f"RL-Zoo {algo} field(s) without a mapping: {sorted(unmapped)}")
    return rows


def ours_config(algo: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Our config fields for a :func:`zoo_params` record: the union of :func:`field_mapping`'s rows."""
    cfg: dict[str, Any] = {}
    for row in field_mapping(algo, params):
        cfg.update(row.ours)
    return cfg


def mapping_markdown(heading: str, algo: str, params: Mapping[str, Any], zoo_keys: set[str]) -> str:
    """The field-by-field mapping of one record as a markdown table under ``heading`` (markdown);
    ``zoo_keys``: the fields RL-Zoo set (the others are SB3's defaults)."""
    out = [f"{heading}\n", "| SB3 field | value | from | our field = value | note |", "|---|---|---|---|---|"]
    for r in field_mapping(algo, params):
        src = "SB3 (fixed)" if r.sb3.startswith("(") else ("zoo" if r.sb3 in zoo_keys else "SB3 default")
        ours = ", ".join(f"`{k}={v}`" for k, v in r.ours.items()) or "–"
        out.append(f"| `{r.sb3}` | {r.value} | {src} | {ours} | {r.note} |")
    return "\n".join(out) + "\n"
