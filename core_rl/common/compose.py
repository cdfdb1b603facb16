"""Agents made of an algorithm and a mixin, ``class X(Mixin, Algo)`` with ``class XConfig(AlgoConfig, MixinConfig)``.

A mixin that changes *how* an algorithm gets its data, not the update (an exploration bonus folded
into the reward, rollouts from remote workers), combines with any algorithm of a matching family;
:func:`compose_agent` writes the pair of classes once instead of per algorithm.
"""

from __future__ import annotations

import types
from typing import Any

from pydantic import BaseModel

from core_rl.common.base import Agent


def compose_agent(mixin: type, mixin_config: type[BaseModel], algo: type[Agent], name: str, class_name: str,
                  doc: str, module: str) -> tuple[type[Any], type[Any]]:
    """``(Agent, Config)``: ``class <class_name>(mixin, algo)`` registered as ``name``, with
    ``class <class_name>Config(algo.config_cls, mixin_config)``, both defined in ``module`` (so that
    they pickle and ship to workers by name)."""
    config_name = f"{class_name}Config"

    def config_body(ns: dict[str, Any]) -> None:
        ns.update(__module__=module, __qualname__=config_name,
                  __doc__=f"The config of :class:`{class_name}`: {algo.config_cls.__name__} + {mixin_config.__name__}.")

    config_cls = types.new_class(config_name, (algo.config_cls, mixin_config), exec_body=config_body)

    def agent_body(ns: dict[str, Any]) -> None:
        ns.update(__module__=module, __qualname__=class_name, __doc__=doc, name=name, config_cls=config_cls)

    return types.new_class(class_name, (mixin, algo), exec_body=agent_body), config_cls


__all__ = ["compose_agent"]
