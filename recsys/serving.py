"""Trained slate policies as MLflow models: user state + candidates in, slate out.

``log_recommender(policy)`` stores a :class:`~recsys.policies.SlatePolicy` file as an artifact of
a models-from-code pyfunc model (no pickling); ``mlflow.pyfunc.load_model(uri).predict(frame)``
takes a DataFrame with one row per request:

* ``user_features``: the user's features (a list of U numbers),
* ``candidate_features``: the candidates' features, flat (C·F numbers, row-major) or nested [C][F],
* ``candidate_doc_ids`` (optional): the candidates' document ids,

or a dict ``{"user": [N, U], "doc": [N, C, F]}``, and returns a DataFrame with ``slate`` (the K
chosen candidate indices, by position) and, when ids were given, ``slate_doc_ids``.
:func:`register_recommender` adds the model to the MLflow model registry; :func:`load_recommender`
gives back the policy object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from core_rl.common.errors import CheckpointError, ConfigError
from recsys.policies import SlateObs, SlatePolicy, load_policy, save_policy


def _stack(column: Any, name: str, want: str, dtype: Any = np.float32) -> np.ndarray:
    """Rows of list column ``name`` as one array; ragged or non-numeric rows name the column and the
    expected shape (``want``)."""
    try:
        rows = [np.asarray(v, dtype=dtype) for v in column]
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=dtype)
    except (ValueError, TypeError):
        raise ConfigError(
            f"input column '{name}' must hold {want} in every row (rows of different shapes or non-numbers)"
        ) from None


def frame_to_obs(frame: Any, policy: SlatePolicy) -> tuple[SlateObs, np.ndarray | None]:
    """A request frame (or ``{"user", "doc"}`` dict) as a batch for ``policy``.

    A malformed request raises one :class:`ConfigError` naming the column and the shape the model
    expects (U user features; C·F candidate features, flat row-major or nested [C][F]; C doc ids)."""
    layout = policy.layout
    if layout is not None:
        u, c, f = layout.user_dim, layout.num_candidates, layout.doc_dim
        want_user, want_doc = f"{u} numbers", f"{c * f} numbers (C={c} candidates x F={f} features) or [{c}][{f}] lists"
        want_ids = f"{c} integers"
    else:
        want_user, want_doc, want_ids = "lists of numbers", "[C][F] lists of numbers", "C integers"
    if isinstance(frame, dict):
        for key in ("user", "doc"):
            if key not in frame:
                raise ConfigError(
                    f"input key '{key}' is missing (a dict request has 'user' [N, U] and 'doc' [N, C, F])"
                )
        try:
            user = np.asarray(frame["user"], dtype=np.float32)
            doc = np.asarray(frame["doc"], dtype=np.float32)
        except (ValueError, TypeError):
            raise ConfigError("input keys 'user' and 'doc' must be numeric arrays [N, U] and [N, C, F]") from None
        if doc.ndim != 3 or (layout is not None and doc.shape[1:] != (c, f)):
            raise ConfigError(
                f"input key 'doc': expected shape [N, {c if layout else 'C'}, {f if layout else 'F'}], "
                f"got {list(doc.shape)}"
            )
        n_req = doc.shape[0]
        if (layout is not None and user.size != n_req * u) or (layout is None and user.ndim and user.shape[0] != n_req):
            raise ConfigError(
                f"input key 'user': expected shape [{n_req}, {u if layout is not None else 'U'}], "
                f"got {list(user.shape)}"
            )
        ids = frame.get("candidate_doc_ids")
        return (
            SlateObs(torch.from_numpy(user.reshape(doc.shape[0], -1)), torch.from_numpy(doc)),
            None if ids is None else np.asarray(ids),
        )
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(f"predict takes a DataFrame or a dict, got {type(frame).__name__}")
    for col in ("user_features", "candidate_features"):
        if col not in frame.columns:
            raise ConfigError(f"input column '{col}' is missing (have: {', '.join(map(str, frame.columns))})")
    n = len(frame)
    user = _stack(frame["user_features"], "user_features", want_user)
    user = user.reshape(n, -1) if n else np.zeros((0, u if layout is not None else 0), dtype=np.float32)
    if layout is not None and user.shape[1] != u:
        raise ConfigError(f"input column 'user_features': the model expects {want_user} per row, got {user.shape[1]}")
    first = np.asarray(frame["candidate_features"].iloc[0], dtype=object) if n else np.zeros(0)
    if first.ndim == 2 or (first.ndim == 1 and len(first) and np.ndim(first[0]) == 1):
        try:
            docs = np.stack(
                [np.stack([np.asarray(r, dtype=np.float32) for r in row]) for row in frame["candidate_features"]]
            )
        except (ValueError, TypeError):
            raise ConfigError(f"input column 'candidate_features': nested rows must all be {want_doc}") from None
        if layout is not None and docs.shape[1:] != (c, f):
            raise ConfigError(
                f"input column 'candidate_features': the model expects {want_doc} per row, "
                f"got [{docs.shape[1]}][{docs.shape[2]}] lists"
            )
    else:
        if layout is None:
            raise ConfigError("flat candidate_features need the policy's layout (C, F)")
        flat = _stack(frame["candidate_features"], "candidate_features", want_doc)
        width = flat.shape[1] if flat.ndim == 2 else (1 if flat.ndim == 1 else -1)
        if n and width != c * f:
            raise ConfigError(
                f"input column 'candidate_features': the model expects {want_doc} per row, got {width} numbers"
            )
        docs = flat.reshape(n, c, f)
    ids = None
    if "candidate_doc_ids" in frame.columns:
        ids = _stack(frame["candidate_doc_ids"], "candidate_doc_ids", want_ids, np.int64)
        if ids.ndim != 2 or ids.shape[1] != docs.shape[1]:
            raise ConfigError(
                f"input column 'candidate_doc_ids': expected {docs.shape[1]} integers per row "
                f"(one per candidate), got shape {list(ids.shape[1:])}"
            )
    return SlateObs(
        torch.from_numpy(np.ascontiguousarray(user)),
        torch.from_numpy(np.ascontiguousarray(docs)),
        None if ids is None else torch.from_numpy(ids),
    ), ids


class RecommenderModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        self.policy = load_policy(context.artifacts["policy"])

    # pd.DataFrame: a hint MLflow takes without inferring a schema from it (the input example gives it)
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        obs, ids = frame_to_obs(model_input, self.policy)
        if self.policy.needs_info:
            raise ConfigError(f"policy '{self.policy.kind}' reads simulator ground truth, it cannot be served")
        slates = self.policy(obs).numpy()
        out = pd.DataFrame({"slate": list(slates)})
        if ids is not None:
            out["slate_doc_ids"] = list(np.take_along_axis(ids, slates, axis=1))
        return out


def example_frame(policy: SlatePolicy, rows: int = 2, seed: int = 0) -> pd.DataFrame:
    """A request frame of random features in the policy's layout (the logged input example)."""
    lay = policy.layout
    if lay is None:
        raise ConfigError("the policy has no layout")
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_features": [rng.normal(size=lay.user_dim).astype(np.float32).tolist() for _ in range(rows)],
            "candidate_features": [
                rng.normal(size=lay.num_candidates * lay.doc_dim).astype(np.float32).tolist() for _ in range(rows)
            ],
            "candidate_doc_ids": [list(range(lay.num_candidates)) for _ in range(rows)],
        }
    )


def request_signature() -> Any:
    """user_features and candidate_features (flat or nested lists) required, candidate_doc_ids optional."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, Schema

    inputs = Schema(
        [
            ColSpec(Array("double"), "user_features"),
            ColSpec(AnyType(), "candidate_features"),
            ColSpec(Array("long"), "candidate_doc_ids", required=False),
        ]
    )
    outputs = Schema([ColSpec(Array("long"), "slate"), ColSpec(Array("long"), "slate_doc_ids", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_recommender(
    policy: SlatePolicy,
    name: str = "recommender",
    policy_path: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Log ``policy`` as a pyfunc model in the active MLflow run; returns the model URI."""
    import tempfile

    if policy.needs_info:
        raise ConfigError(f"policy '{policy.kind}' reads simulator ground truth and cannot be served")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_policy(policy, policy_path or Path(tmp) / "policy.pt", extra)
        example = example_frame(policy) if policy.layout is not None else None
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("_serving_entry.py")),
            artifacts={"policy": str(path)},
            input_example=example,
            signature=request_signature(),
            pip_requirements=["deeprl-suite", "torch", "numpy", "pandas"],
        )
    return info.model_uri


def register_recommender(model_uri: str, name: str) -> str:
    """Register the model under ``name`` in the MLflow model registry; returns the version."""
    version = mlflow.register_model(model_uri, name)
    return str(version.version)


def load_recommender(model_uri: str) -> SlatePolicy:
    """The :class:`SlatePolicy` inside a logged recommender model."""
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:
        raise CheckpointError(f"model '{model_uri}' cannot be loaded: {str(exc).splitlines()[0][:200]}") from None
    inner = model.unwrap_python_model()
    if not isinstance(inner, RecommenderModel):
        raise CheckpointError(f"model '{model_uri}' is not a recsys recommender")
    return inner.policy


__all__ = [
    "RecommenderModel",
    "frame_to_obs",
    "example_frame",
    "log_recommender",
    "register_recommender",
    "load_recommender",
]
