"""A config that changes an inherited field's default keeps the field's bounds: ``PPOConfig`` once redeclared
``n_steps: int = 256`` and so lost ``OnPolicyConfig``'s ``ge=1``, and ``--set n_steps=-3`` ended in a torch
traceback instead of one line naming the field. Thirty-nine fields of eleven configs had dropped a bound so (2026-12-08)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

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
