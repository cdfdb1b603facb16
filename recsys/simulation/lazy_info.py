"""A step-info dict whose costly entries are computed when first read.

The slate envs report per-candidate quantities (``[N, C]`` choice logits and the like) in every
info. Building them costs more than the user step itself, and most callers never read them. A
:class:`LazyInfo` holds such an entry as a function of tensors captured at the step (never mutated
afterwards), so the value is the same whenever it is read — before or after later steps — and
equal to what the eager code put there.

It is a real ``dict``: ``info[key]``, ``get``, ``in``, ``len``, iteration over keys, ``keys``,
``items``, ``values``, ``dict(info)``, ``{**info}``, ``copy``, ``==``, ``pop``, pickling and ``repr``
all see the computed values (each computed once, then stored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

_PENDING = object()  # placeholder stored in the dict until the entry is computed


class LazyInfo(dict):
    """``dict`` of eager values plus entries given as zero-argument functions, called on first read."""

    __slots__ = ("_thunks",)

    def __init__(self, eager: dict[str, Any] | None = None, lazy: dict[str, Callable[[], Any]] | None = None):
        super().__init__(eager or {})
        self._thunks: dict[str, Callable[[], Any]] = {}
        for key, fn in (lazy or {}).items():
            self.set_lazy(key, fn)

    def set_lazy(self, key: str, fn: Callable[[], Any]) -> None:
        """Store ``key`` as ``fn()``, computed when first read."""
        dict.__setitem__(self, key, _PENDING)
        self._thunks[key] = fn

    def is_pending(self, key: str) -> bool:
        """Whether ``key`` is held but not computed yet."""
        return dict.get(self, key) is _PENDING

    def _resolve(self, key: Any) -> Any:
        value = self._thunks.pop(key)()
        dict.__setitem__(self, key, value)
        return value

    def materialize(self) -> LazyInfo:
        """Compute every pending entry (in place); returns ``self``."""
        for key in [k for k, v in dict.items(self) if v is _PENDING]:
            self._resolve(key)
        return self

    # ---- reads that must see values, not placeholders ----------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        return self._resolve(key) if value is _PENDING else value

    def get(self, key: Any, default: Any = None) -> Any:
        value = dict.get(self, key, default)
        return self._resolve(key) if value is _PENDING else value

    def __iter__(self) -> Iterator[Any]:  # overridden so that dict(info) / {**info} go through __getitem__
        return dict.__iter__(self)

    def items(self) -> Any:
        return dict.items(self.materialize())

    def values(self) -> Any:
        return dict.values(self.materialize())

    def pop(self, key: Any, *default: Any) -> Any:
        if dict.get(self, key) is _PENDING:
            self._resolve(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[Any, Any]:
        return dict.popitem(self.materialize())

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if dict.get(self, key) is _PENDING:
            return self._resolve(key)
        return dict.setdefault(self, key, default)

    def copy(self) -> LazyInfo:
        """A shallow copy; pending entries stay pending in both (each computes its own, equal, value)."""
        out = LazyInfo(dict(dict.items(self)))
        out._thunks = {k: fn for k, fn in self._thunks.items() if dict.get(self, k) is _PENDING}
        return out

    def __copy__(self) -> LazyInfo:
        return self.copy()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyInfo):
            other.materialize()
        return dict.__eq__(self.materialize(), other)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]  # like dict

    def __or__(self, other: Any) -> Any:
        return dict(self) | other

    def __ror__(self, other: Any) -> Any:
        return other | dict(self)

    def __repr__(self) -> str:
        return dict.__repr__(self.materialize())

    def __reduce__(self) -> tuple[Any, ...]:
        return (LazyInfo, (dict(self),))
