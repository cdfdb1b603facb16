"""Validated configs: pydantic models checked at the edge.

Every algorithm's config is a subclass of :class:`AgentConfig`. Unknown fields are rejected and
types are checked before any torch code runs; :func:`parse_config` turns pydantic's report into
one :class:`ConfigError` that names each offending field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core_rl.common.errors import ConfigError

C = TypeVar("C", bound="AgentConfig")


class AgentConfig(BaseModel):
    """Fields every agent shares."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    seed: int = Field(0, ge=0, description="Seed for torch, numpy and the envs.")
    gamma: float = Field(0.99, gt=0.0, le=1.0, description="Discount factor γ.")
    hidden_sizes: tuple[int, ...] = Field((64, 64), description="Hidden layer widths of every MLP.")
    activation: str = Field("tanh", pattern="^(tanh|relu|elu|gelu)$")
    device: str = Field("cpu", description="torch device, e.g. cpu or cuda.")
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads; 0 leaves torch's default.")
    encoder: Literal["auto", "mlp", "nature_cnn", "impala_cnn"] = Field(
        "auto",
        description="Observation encoder: auto = a CNN for image (uint8 C,H,W or H,W,C) observations "
        "(Nature CNN from 36 px a side, IMPALA CNN below), else flat (mlp).",
    )
    frame_strip_every: int = Field(
        100_000,
        ge=0,
        description="With image observations, log a PNG strip of the frames the agent sees every this many "
        "env steps and at the end of learn (0: never).",
    )


def format_validation_error(err: ValidationError, prefix: str = "config") -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
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
