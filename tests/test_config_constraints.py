"""A config that changes an inherited field's default keeps the field's bounds: ``PPOConfig`` once redeclared
``n_steps: int = 256`` and so lost ``OnPolicyConfig``'s ``ge=1``, and ``--set n_steps=-3`` ended in a torch
traceback instead of one line naming the field. Thirty-nine fields of eleven configs had dropped a bound so (2026-12-08)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pydantic
import pytest

PACKAGES = ("core_rl", "safety", "recsys", "autotune", "pipelines")


def _config_classes() -> list[type[pydantic.BaseModel]]:
    classes: dict[str, type[pydantic.BaseModel]] = {}
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if info.name.endswith("__main__"):
                continue
            try:
                module = importlib.import_module(info.name)
            except ImportError:  # an optional extra (RecSim NG's TensorFlow side) is not installed here
                continue
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, pydantic.BaseModel) and cls.__module__ == module.__name__:
                    classes[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(classes.values())


def test_a_redeclared_field_keeps_every_bound_it_inherits():
    dropped = []
    for cls in _config_classes():
        own = cls.__dict__.get("__annotations__", {})
        for field, info in cls.model_fields.items():
            if field not in own:
                continue
            parent = next(
                (
                    b
                    for b in cls.__mro__[1:]
                    if isinstance(b, type) and issubclass(b, pydantic.BaseModel) and field in b.model_fields
                ),
                None,
            )
            if parent is None:
                continue
            kinds = {type(m) for m in info.metadata}
            missing = [m for m in parent.model_fields[field].metadata if type(m) not in kinds]
            if missing:
                dropped.append(f"{cls.__module__}.{cls.__qualname__}.{field} drops {parent.__name__}'s {missing}")
    assert not dropped, "\n".join(dropped)


def test_a_bad_inherited_field_is_one_error_naming_it():
    from core_rl.common.errors import ConfigError
    from core_rl.registry import get_algo

    for algo in ("ppo", "a2c", "trpo"):
        cls = get_algo(algo).cls
        with pytest.raises((ConfigError, pydantic.ValidationError), match="n_steps"):
            cls.config_cls(n_steps=-3)


def test_every_width_field_refuses_a_zero_or_negative_layer():
    """``hidden_sizes=[0]`` trained "successfully" a net whose outputs are constants, and ``[-5]`` failed inside torch;
    every config's width fields (``Widths``) now refuse both with the field's name."""
    widths = [
        (cls, name, info)
        for cls in _config_classes()
        for name, info in cls.model_fields.items()
        if name.endswith("hidden_sizes")
    ]
    assert len({f"{cls.__name__}.{name}" for cls, name, _ in widths}) >= 20
    for cls, name, info in widths:
        adapter = pydantic.TypeAdapter(info.annotation)
        assert adapter.validate_python([3, 1]) == (3, 1)
        for bad in ([0], [8, -5]):
            with pytest.raises(pydantic.ValidationError):
                adapter.validate_python(bad)
    from core_rl.common.errors import ConfigError
    from core_rl.registry import get_algo

    with pytest.raises((ConfigError, pydantic.ValidationError), match="hidden_sizes"):
        get_algo("sac").cls.config_cls(hidden_sizes=(256, 0))


def test_a_device_this_process_cannot_use_is_refused_and_a_gpu_checkpoint_loads_on_cpu(tmp_path):
    """``device="banana"`` and ``"cuda:7"`` (no such GPU here) are one error naming the field, not torch's assertion
    at the first tensor; a checkpoint trained on a device this process lacks loads on the CPU with a warning."""
    import torch

    from core_rl.common.errors import ConfigError
    from core_rl.trust_region.ppo import PPO, PPOConfig

    bad = ["banana", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        with pytest.raises((ConfigError, pydantic.ValidationError), match="device"):
            PPOConfig(device=device)
    assert PPOConfig(device="cpu").device == "cpu"

    agent = PPO("CartPole-v1", {"n_steps": 16, "batch_size": 16, "n_envs": 1, "seed": 0})
    agent.learn(16)
    path = tmp_path / "ppo.pt"
    agent.save(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["config"]["device"] = "cuda:99"  # as if trained on a machine with a hundred GPUs
    torch.save(payload, path)
    with pytest.warns(UserWarning, match="cuda:99.*loading it on cpu"):
        loaded = PPO.load(path)
    assert loaded.config.device == "cpu"
    obs = np.zeros((1, 4), dtype=np.float32)
    assert np.array_equal(loaded.predict(obs, deterministic=True), agent.predict(obs, deterministic=True))
