"""Validated configs: pydantic models checked at the edge.

Every algorithm's config is a subclass of :class:`AgentConfig`. Unknown fields are rejected and
types are checked before any torch code runs; :func:`parse_config` turns pydantic's report into
one :class:`ConfigError` that names each offending field.

RL-Zoo's conventions are accepted where a user would paste them (:func:`zoo_conventions`):
``net_arch`` (a list of widths, or ``dict(pi=..., vf=...)`` / ``dict(pi=..., qf=...)`` with equal
sizes, or SB3's older ``[dict(...)]``) sets ``hidden_sizes``; ``n_timesteps`` is ignored (the budget
is the run's ``steps``); ``lin_<x0>`` on a field with a schedule (``lr``, PPO's ``clip_range``) is
that value decaying linearly to 0 (:mod:`core_rl.common.schedules`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from core_rl.common.errors import ConfigError
from core_rl.common.schedules import split_schedules

C = TypeVar("C", bound="AgentConfig")

#: Hidden layer widths, each at least 1: a 0-wide layer makes every output a constant (a net that trains without
#: error and learns nothing), a negative one fails deep inside torch; both are refused here, naming the field.
Widths = tuple[Annotated[int, Field(ge=1)], ...]


def check_device(device: str) -> str:
    """A torch device string this process can use: ``cpu``, ``cuda`` / ``cuda:N`` with a GPU N visible, ``mps``
    where torch has it. Refused here, naming the field, rather than by torch's assertion at the first tensor."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{device!r} is not a torch device ({str(exc).splitlines()[0][:80]}…)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{device!r}: this torch ({torch.__version__}) sees no CUDA GPU; use 'cpu'")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"{device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{device!r}: MPS is not available here; use 'cpu'")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{device!r}: the agents run on cpu, cuda or mps")
    return device


#: A torch device string, checked against what this process can use (:func:`check_device`).
Device = Annotated[str, AfterValidator(check_device)]


class AgentConfig(BaseModel):
    """Fields every agent shares."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    seed: int = Field(0, ge=0, description="Seed for torch, numpy and the envs.")
    gamma: float = Field(0.99, gt=0.0, le=1.0, description="Discount factor γ.")
    hidden_sizes: Widths = Field((64, 64), description="Hidden layer widths of every MLP.")
    activation: str = Field("tanh", pattern="^(tanh|relu|elu|gelu)$")
    device: Device = Field("cpu", description="torch device, e.g. cpu or cuda.")
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads; 0 leaves torch's default.")
    encoder: Literal["auto", "mlp", "nature_cnn", "impala_cnn"] = Field(
        "auto",
        description="Observation encoder: auto = a CNN for image (uint8 C,H,W or H,W,C) observations "
        "(Nature CNN from 36 px a side, IMPALA CNN below), else flat (mlp).",
    )
    encoder_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="'bfloat16': the convolutional encoder (Nature or IMPALA CNN) runs under "
        "torch.autocast(bfloat16) - its convolutions and linear layer take bf16 inputs, while parameters, "
        "optimizer state, the features it returns and every head, target and loss stay float32; batches under "
        "8 observations (one env's acting step) stay float32, where the casts cost more than they save. A speed mode "
        "for CPUs with AVX512-BF16/AMX and for GPUs (a CPU without bf16 instructions runs it far slower); "
        "image observations only.",
    )
    frame_strip_every: int = Field(
        100_000,
        ge=0,
        description="With image observations, log a PNG strip of the frames the agent sees every this many "
        "env steps and at the end of learn (0: never).",
    )

    #: field → its schedule field; a ``lin_<x0>`` value of the field sets both (RL-Zoo's schedules)
    schedule_fields: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _zoo_conventions(cls, data: Any) -> Any:
        return zoo_conventions(data, cls.schedule_fields) if isinstance(data, Mapping) else data


def net_arch_sizes(net_arch: Any) -> tuple[int, ...]:
    """SB3's ``net_arch`` as one tuple of hidden widths: ``[64, 64]``, ``dict(pi=[64], vf=[64])``,
    ``dict(pi=..., qf=...)`` or the older ``[dict(pi=..., vf=...)]``. Our agents give every network
    the same widths, so the dict's entries must agree (a ``ValueError`` says so otherwise)."""
    if isinstance(net_arch, (list, tuple)) and len(net_arch) == 1 and isinstance(net_arch[0], Mapping):
        net_arch = net_arch[0]
    if isinstance(net_arch, Mapping):
        unknown = set(net_arch) - {"pi", "vf", "qf"}
        if unknown or not net_arch:
            raise ValueError(f"net_arch: a dict takes the keys pi, vf, qf, got {sorted(net_arch)}")
        sizes = {k: tuple(int(w) for w in v) for k, v in net_arch.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(
                f"net_arch: {dict(net_arch)} gives the networks different widths; our agents share one "
                "hidden_sizes for actor and critic: use equal sizes"
            )
        return next(iter(sizes.values()))
    if isinstance(net_arch, (list, tuple)) and all(isinstance(w, int) and not isinstance(w, bool) for w in net_arch):
        return tuple(net_arch)
    raise ValueError(f"net_arch: expected a list of widths or dict(pi=[...], vf=[...]), got {net_arch!r}")


def zoo_conventions(data: Mapping[str, Any], schedule_fields: Mapping[str, str]) -> dict[str, Any]:
    """``data`` with RL-Zoo's conventions turned into our fields (see the module docstring)."""
    out = dict(data)
    out.pop("n_timesteps", None)  # RL-Zoo's budget: a run's steps decide (a preset's is the CLI default)
    if "net_arch" in out:
        sizes = net_arch_sizes(out.pop("net_arch"))
        if "hidden_sizes" in out and tuple(out["hidden_sizes"]) != sizes:
            raise ValueError(f"net_arch {list(sizes)} and hidden_sizes {list(out['hidden_sizes'])} disagree")
        out["hidden_sizes"] = sizes
    return split_schedules(out, schedule_fields)


def format_validation_error(err: ValidationError, prefix: str = "config") -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        if not field:  # a whole-config check (its message names the fields)
            parts.append(f"{prefix}: {msg.removeprefix('Value error, ')}")
            continue
        parts.append(f"{prefix} field '{field}': {msg}")
    return "; ".join(parts)


def parse_config(config_cls: type[C], config: C | Mapping[str, Any] | None = None, **overrides: Any) -> C:
    """Build and validate ``config_cls`` from a model, a mapping, or nothing, plus overrides."""
    if isinstance(config, config_cls) and not overrides:
        return config
    data: dict[str, Any] = {}
    if isinstance(config, BaseModel):
        data.update(config.model_dump())
    elif config is not None:
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a mapping or {config_cls.__name__}, got {type(config).__name__}")
        data.update(config)
    data.update(overrides)
    try:
        return config_cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON, YAML or TOML config file into a mapping (validated later by the agent)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # parse errors of three libraries
        raise ConfigError(f"config file '{path}' cannot be parsed: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of field names to values")
    return data
