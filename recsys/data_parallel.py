r"""Data-parallel training of the recommender's learners from logs: DDP-style gradient all-reduce
with ``torch.distributed`` over gloo on CPUs (:class:`DataParallel`, :func:`run_data_parallel`).

W worker processes each hold a replica of the model (rank 0's parameters are broadcast at the
start). Every rank draws the *same* global minibatch of B rows a single worker would draw — the same
seeded chunk order and row permutation (:func:`recsys.training.fit_offline`) — and takes its rows
:math:`r, r+W, r+2W, \dots` (:meth:`DataParallel.shard`): :math:`n_r` of them. Its learner computes
the mean loss over its rows, :math:`\bar\ell_r = \frac1{n_r}\sum_{i\in r}\ell_i`, and before the
optimizer steps the gradients are all-reduced with weights :math:`n_r/B`:

.. math::  g = \sum_r \frac{n_r}{B}\,\nabla\bar\ell_r = \nabla\,\frac1B\sum_{i=1}^{B}\ell_i,

the single worker's gradient at global batch B (one flat all-reduce per step). The reported metrics
are reduced the same way, so the loss curve is the global batch's. Same seed, same data → the same
loss curve as one worker up to float rounding (summation order), which the tests check.

What it parallelises is the forward/backward pass (each rank does 1/W of the rows); each rank still
reads and decodes the whole log (every rank needs every minibatch's row indices), and pays one
all-reduce of |θ| floats per step. The processes meet through a rendezvous file (torch's TCP
store would listen on every interface) and talk over gloo on the loopback interface only: one
machine's worth of workers (across machines the same code needs a TCP rendezvous on the nodes'
network, e.g. under ``torchrun`` or Ray Train).

Learners whose loss is not a plain mean of per-row terms reduce what couples the rows first. With
global counts and sums from :meth:`DataParallel.all_sum`, a rank's loss is its *contribution*
:math:`\ell_r = \frac1N\sum_{i\in r}\ell_i(b)` (N the global normaliser, b a global statistic), the
gradients are summed (``all_reduce_gradients(params, weight=1)``) and the metrics too
(``reduce_metrics(..., summed=True)``); clipping comes after the all-reduce (:func:`reduce_and_clip`),
because the single worker clips the global batch's gradient:

* top-K REINFORCE (:mod:`recsys.topk_reinforce`): the mean baseline :math:`b = \sum R/E` and the
  normaliser E over the global minibatch's events;
* offline SlateQ and CQL (:mod:`recsys.slateq`, :mod:`recsys.offline`): the TD loss over the global
  clicked count, the conservative penalty and the learned choice model's NLL over the global rows;
  the target network follows the online one, equal on every rank;
* behaviour cloning / the propensity model (:meth:`recsys.logs.PropensityModel.fit`): a mean NLL,
  weights :math:`n_r/B`.

:class:`recsys.log_learners.LearnerJob` runs any of them as one rank's job;
``deeprl recsys train --workers W`` uses it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from core_rl.common.errors import ConfigError

LOOPBACK_INTERFACE = "lo"


def _first_rows(batch: Any) -> int | None:
    """Rows of the first row-first tensor in ``batch`` (depth first), None if it holds none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else None
    if is_dataclass(batch) and not isinstance(batch, type):
        items: Iterable[Any] = (getattr(batch, f.name) for f in fields(batch))
    elif isinstance(batch, Mapping):
        items = batch.values()
    elif isinstance(batch, (tuple, list)):
        items = batch
    else:
        return None
    for item in items:
        rows = _first_rows(item)
        if rows is not None:
            return rows
    return None


def take_rows(batch: Any, rows: slice) -> Any:
    """``batch`` with every row-first tensor indexed by ``rows``: tensors, tuples, lists, mappings and
    dataclasses are walked; None, scalars and 0-d tensors are kept as they are."""
    if isinstance(batch, torch.Tensor):
        return batch[rows] if batch.dim() > 0 else batch
    if is_dataclass(batch) and not isinstance(batch, type):
        return replace(batch, **{f.name: take_rows(getattr(batch, f.name), rows) for f in fields(batch) if f.init})
    if isinstance(batch, Mapping):
        return type(batch)({k: take_rows(v, rows) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(take_rows(x, rows) for x in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(take_rows(x, rows) for x in batch)
    return batch


@dataclass
class DataParallel:
    """One rank's view of the data-parallel group (``world`` processes, this one ``rank``).

    The learners use four collectives: :meth:`shard` (this rank's rows of a global minibatch),
    :meth:`all_sum` (global counts and sums: a baseline, a normaliser), :meth:`all_reduce_gradients`
    (before clipping and the optimizer step) and :meth:`reduce_metrics`; :meth:`broadcast_parameters`
    once at the start, for every network the learner keeps (policy, target, choice model)."""

    rank: int
    world: int
    rows: int = 0  # rows this rank took from the current global minibatch
    total: int = 0  # rows of the current global minibatch
    steps: int = 0
    comm_seconds: float = 0.0  # wall time spent in collectives (waiting for the other ranks included)
    comm_cpu_seconds: float = 0.0  # this process's CPU time spent in them (all its threads)

    @property
    def weight(self) -> float:
        """n_r / B: this rank's share of the current global minibatch."""
        return self.rows / self.total if self.total else 0.0

    def shard_batch(self, batch: Any) -> Any:
        """Rows ``rank::world`` of a global minibatch (tensors, tuples, dataclasses, None fields; every
        tensor row-first with the same rows); records n_r and B for :attr:`weight`."""
        self.total = _first_rows(batch) or 0
        part = take_rows(batch, slice(self.rank, None, self.world))
        self.rows = len(range(self.rank, self.total, self.world))
        return part

    def shard(
        self, batches: Callable[[Any, torch.Generator], Iterable[Any]]
    ) -> Callable[[Any, torch.Generator], Iterator[Any]]:
        """Wrap a learner's ``(chunk, generator) → minibatches`` so that this rank gets its rows of each
        global minibatch (:meth:`shard_batch`)."""

        def sharded(chunk: Any, generator: torch.Generator) -> Iterator[Any]:
            for batch in batches(chunk, generator):
                yield self.shard_batch(batch)

        return sharded

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        t0, c0 = time.perf_counter(), time.process_time()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        self.comm_seconds += time.perf_counter() - t0
        self.comm_cpu_seconds += time.process_time() - c0
        return t

    def all_sum(self, x: torch.Tensor | float | Sequence[float]) -> torch.Tensor:
        """Σ_r x_r over the ranks, in float64 (a new tensor; ``x`` is not modified, nor its graph)."""
        return self._all_reduce(torch.as_tensor(x).detach().to(torch.float64).clone())

    def broadcast_parameters(self, *modules: torch.nn.Module | None) -> None:
        """Every rank starts from rank 0's parameters and buffers of each module (None skipped)."""
        for module in modules:
            if module is None:
                continue
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)

    def all_reduce_gradients(self, params: Iterable[torch.nn.Parameter], weight: float | None = None) -> None:
        r"""``grad ← Σ_r w_r grad_r`` over the ranks, as one flat buffer.

        ``weight`` None: :math:`w_r = n_r/B` (:attr:`weight`), for a loss that is this rank's mean over
        its rows; ``weight=1``: for a loss already normalised by global counts (a sum over this rank's
        rows divided by :meth:`all_sum` of the counts). Either way the result is the single worker's
        gradient at global batch B; clip it after this, not before."""
        params = list(params)
        w = self.weight if weight is None else float(weight)
        flat = torch.cat(
            [(p.grad.reshape(-1) * w if (p.grad is not None and w != 0) else torch.zeros(p.numel())) for p in params]
        )
        self._all_reduce(flat)
        start = 0
        for p in params:
            n = p.numel()
            p.grad = flat[start : start + n].view_as(p).clone()
            start += n
        self.steps += 1

    def optimizer(self, opt: torch.optim.Optimizer) -> "AllReduceOptimizer":
        return AllReduceOptimizer(opt, self)

    def reduce_metrics(self, metrics: dict[str, float], summed: bool = False) -> dict[str, float]:
        """The global minibatch's metrics, one all-reduce: ``Σ_r (n_r/B) m_r`` for metrics that are this
        rank's means over its rows; with ``summed`` the values are already this rank's contributions to
        the global metric (a sum over its rows divided by a global count) and are added up as they are."""
        if not metrics:
            return metrics
        keys = sorted(metrics)
        w = 1.0 if summed else self.weight
        vals = torch.tensor([metrics[k] * w if w > 0 else 0.0 for k in keys], dtype=torch.float64)
        self._all_reduce(vals)
        return dict(zip(keys, vals.tolist(), strict=True))


def all_sum(group: DataParallel | None, x: torch.Tensor) -> torch.Tensor:
    """Σ over the ranks of ``group`` (float64), or ``x`` itself in float64 without one."""
    return x.detach().to(torch.float64) if group is None else group.all_sum(x)


def reduce_and_clip(
    group: DataParallel | None, params: Iterable[torch.nn.Parameter], max_norm: float | None, weight: float | None = 1.0
) -> None:
    """All-reduce the gradients (with ``group``), *then* clip their global norm to ``max_norm``: the
    single worker clips the global batch's gradient, so the ranks must clip the reduced one."""
    params = list(params)
    if group is not None:
        group.all_reduce_gradients(params, weight)
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


class AllReduceOptimizer:
    """An optimizer whose ``step`` first all-reduces the gradients (:meth:`DataParallel.all_reduce_gradients`)."""

    def __init__(self, opt: torch.optim.Optimizer, group: DataParallel):
        self.opt, self.group = opt, group
        self.params = [p for g in opt.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.group.all_reduce_gradients(self.params)
        self.opt.step()


# ---- launching W processes ---------------------------------------------------------------------------
@dataclass
class RankResult:
    """What one rank's job returned, with its CPU and wall seconds and time in all-reduces."""

    rank: int
    value: Any
    cpu_seconds: float
    wall_seconds: float
    comm_seconds: float
    comm_cpu_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _rank_main(rank: int, world: int, job: Callable[[DataParallel], Any], out_dir: str) -> None:
    # rendezvous through a file (no TCP store: torch's listens on every interface); gloo's own
    # connections are pinned to the loopback interface
    os.environ["GLOO_SOCKET_IFNAME"] = LOOPBACK_INTERFACE
    dist.init_process_group("gloo", init_method=f"file://{Path(out_dir) / 'rendezvous'}", rank=rank, world_size=world)
    group = DataParallel(rank, world)
    try:
        dist.barrier()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        value = job(group)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        torch.save(
            RankResult(rank, value, cpu, wall, group.comm_seconds, group.comm_cpu_seconds),
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def run_data_parallel(
    job: Callable[[DataParallel], Any], workers: int, timeout_s: float | None = 600.0
) -> list[RankResult]:
    """Run ``job(group)`` in ``workers`` processes joined by gloo on loopback; every rank's result, by rank
    (``timeout_s`` None: no limit).

    ``job`` must be picklable (a module-level function or a dataclass with ``__call__``). A rank that
    fails makes this raise with its error (``torch.multiprocessing`` re-raises it here)."""
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="recsys-ddp-") as out_dir:
        ctx = mp.start_processes(
            _rank_main, args=(workers, job, out_dir), nprocs=workers, join=False, start_method="spawn"
        )
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not ctx.join(timeout=1.0):
            if deadline is not None and time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                raise TimeoutError(f"data-parallel job did not finish in {timeout_s:.0f} s")
        return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False) for r in range(workers)]


class RecordingTracker:
    """A tracker that keeps every ``log_metrics`` call (``records``, to replay into a real tracker) and,
    of one metric, every step's value (not the epoch means, which carry ``epoch``) with the process's
    CPU and wall clocks at each (steady-state rates leave out the first steps' warm-up)."""

    def __init__(self, key: str):
        self.key = key
        self.values: list[float] = []
        self.clocks: list[tuple[float, float]] = []
        self.records: list[tuple[dict[str, float], int]] = []

    def log_params(self, params: Any) -> None:
        pass

    def log_metrics(self, metrics: Any, step: int) -> None:
        self.records.append((dict(metrics), int(step)))
        if self.key in metrics and "epoch" not in metrics:
            self.values.append(float(metrics[self.key]))
            self.clocks.append((time.process_time(), time.perf_counter()))

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        pass

    def log_figure(self, figure: Any, name: str) -> None:
        pass


__all__ = [
    "RecordingTracker",
    "DataParallel",
    "AllReduceOptimizer",
    "RankResult",
    "all_sum",
    "reduce_and_clip",
    "run_data_parallel",
    "take_rows",
]
