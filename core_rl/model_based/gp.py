r"""An exact Gaussian-process dynamics model in torch: the data-efficient model of notes 9/26.

Each output d of y = (Δs, r) gets an independent GP with an ARD RBF (squared-exponential) kernel

.. math::
    k_d(x, x') = \sigma_{f,d}^2 \exp\Big(-\tfrac12 \sum_j \frac{(x_j - x'_j)^2}{\ell_{d,j}^2}\Big),
    \qquad y_d = f_d(x) + \varepsilon,\ \varepsilon\sim\mathcal N(0, \sigma_{n,d}^2).

The hyperparameters θ_d = (ℓ_d, σ_f,d, σ_n,d) maximize the log marginal likelihood

.. math::
    \log p(\mathbf y_d | X, \theta_d) = -\tfrac12 \mathbf y_d^\top K_d^{-1}\mathbf y_d - \tfrac12\log|K_d|
                                         - \tfrac N2 \log 2\pi,\qquad K_d = K_{f,d} + \sigma_{n,d}^2 I,

and predictions are the posterior :math:`\mu_d(x_*) = k_*^\top K_d^{-1}\mathbf y_d`,
:math:`\sigma_d^2(x_*) = k_{**} - k_*^\top K_d^{-1} k_*`. The D outputs are one batched
``[D, N, N]`` Cholesky factorization; the cost is O(N³), so the model keeps at most ``max_points``
(the newest) transitions — GPs are the small-data model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from core_rl.common.errors import ConfigError
from core_rl.common.transitions import Transitions
from core_rl.model_based.dynamics import Normalizer

_MIN_LOG_NOISE = math.log(1e-4)  # noise std floor (normalized units)
_MIN_LOG_LENGTHSCALE, _MAX_LOG_LENGTHSCALE = math.log(1e-2), math.log(1e3)
_MIN_LOG_SIGNAL, _MAX_LOG_SIGNAL = math.log(1e-3), math.log(1e3)


class GPDynamics(nn.Module):
    """Independent exact GPs (ARD RBF) per output of y = (Δs, r), hyperparameters by marginal likelihood."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        learn_reward: bool = True,
        max_points: int = 500,
        n_members: int = 1,
        jitter: float = 1e-6,
        seed: int = 0,
    ):
        super().__init__()
        self.obs_dim, self.act_dim, self.n_members = int(obs_dim), int(act_dim), int(n_members)
        self.learn_reward = bool(learn_reward)
        self.out_dim = self.obs_dim + (1 if learn_reward else 0)
        self.in_dim = self.obs_dim + self.act_dim
        self.max_points, self.jitter = int(max_points), jitter
        D = self.out_dim
        self.log_lengthscale = nn.Parameter(torch.zeros(D, self.in_dim, dtype=torch.float64))
        self.log_signal_std = nn.Parameter(torch.zeros(D, dtype=torch.float64))
        self.log_noise_std = nn.Parameter(torch.full((D,), math.log(0.1), dtype=torch.float64))
        self.in_norm = Normalizer(self.in_dim)
        self.out_norm = Normalizer(self.out_dim)
        self.register_buffer("fitted", torch.tensor(False))
        self.register_buffer("x_train", torch.zeros(0, self.in_dim, dtype=torch.float64))
        self.register_buffer("y_train", torch.zeros(0, D, dtype=torch.float64))
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.generator = torch.Generator().manual_seed(seed)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("x_train", "y_train"):  # the stored data set has the size it had when saved
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        self._cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- kernel ------------------------------------------------------------------------------------
    def kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """K_d(a, b) for every output d: ``a [Na, in], b [Nb, in] -> [D, Na, Nb]``."""
        # hyperparameters are bounded inside the model (not only after fitting): an L-BFGS line search
        # that tries extreme values then sees a flat objective instead of overflowing into NaN
        ls = self.log_lengthscale.clamp(_MIN_LOG_LENGTHSCALE, _MAX_LOG_LENGTHSCALE).exp()[:, None, :]  # [D, 1, in]
        a_s, b_s = a[None] / ls, b[None] / ls  # [D, N, in]
        sq = (
            a_s.pow(2).sum(-1)[:, :, None] + b_s.pow(2).sum(-1)[:, None, :] - 2 * a_s @ b_s.transpose(1, 2)
        ).clamp_min(0.0)
        return self._signal_var()[:, None, None] * torch.exp(-0.5 * sq)

    def _signal_var(self) -> torch.Tensor:
        return (2 * self.log_signal_std.clamp(_MIN_LOG_SIGNAL, _MAX_LOG_SIGNAL)).exp()

    def _noisy_gram(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        eye = torch.eye(n, dtype=x.dtype)
        # the noise floor holds inside the optimizer too (not only after it), so the Gram matrix
        # stays positive definite on duplicated or noise-free data
        noise_var = (2 * self.log_noise_std.clamp(min=_MIN_LOG_NOISE)).exp()
        return self.kernel(x, x) + (noise_var[:, None, None] + self.jitter) * eye

    def _cholesky(self, gram: torch.Tensor) -> torch.Tensor:
        """Cholesky factor of ``[D, N, N]`` Gram matrices, adding diagonal jitter (×10 per try, up to
        1e-2 of the mean diagonal) where round-off leaves one numerically indefinite."""
        L, info = torch.linalg.cholesky_ex(gram)
        scale = gram.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None].detach()
        extra = 1e-8
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
        while bool((info > 0).any()):
            if extra > 1e-2:
                raise FloatingPointError(
                    "GP Gram matrix is not positive definite even with jitter 1e-2 × its diagonal; "
                    "the data or hyperparameters are degenerate"
                )
            L, info = torch.linalg.cholesky_ex(gram + extra * scale * eye)
            extra *= 10
        return L

    def negative_log_marginal_likelihood(
        self, x: torch.Tensor | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """−Σ_d log p(y_d | X, θ_d), on the (normalized) training data by default."""
        x = self.x_train if x is None else x
        y = self.y_train if y is None else y
        n = x.shape[0]
        L = self._cholesky(self._noisy_gram(x))  # [D, N, N]
        yd = y.T[:, :, None]  # [D, N, 1]
        alpha = torch.cholesky_solve(yd, L)
        fit = 0.5 * (yd * alpha).sum((1, 2))
        logdet = torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(-1)
        return (fit + logdet + 0.5 * n * math.log(2 * math.pi)).sum()

    # -- training ----------------------------------------------------------------------------------
    def fit(self, data: Transitions, iterations: int = 100, lr: float = 0.05, **_: Any) -> dict[str, float]:
        """Store the newest ``max_points`` transitions and fit θ by maximizing the marginal likelihood (L-BFGS)."""
        if len(data) == 0:
            raise ConfigError("cannot fit a GP on zero transitions")
        x, y = data.inputs(), data.targets(self.learn_reward)
        x, y = x[-self.max_points :], y[-self.max_points :]
        self.in_norm.fit(x)
        self.out_norm.fit(y)
        self.x_train = self.in_norm(x).double()
        self.y_train = self.out_norm(y).double()
        optimizer = torch.optim.LBFGS(
            [self.log_lengthscale, self.log_signal_std, self.log_noise_std],
            lr=lr * 20,
            max_iter=iterations,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = self.negative_log_marginal_likelihood() / self.x_train.shape[0]
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():  # keep the noise away from 0 for a well-conditioned Gram matrix
            self.log_noise_std.clamp_(min=_MIN_LOG_NOISE)
            self.log_lengthscale.clamp_(_MIN_LOG_LENGTHSCALE, _MAX_LOG_LENGTHSCALE)
            self.log_signal_std.clamp_(_MIN_LOG_SIGNAL, _MAX_LOG_SIGNAL)
        self._cache = None
        self.fitted.fill_(True)
        with torch.no_grad():
            nlml = self.negative_log_marginal_likelihood().item() / self.x_train.shape[0]
        return {"model_loss": nlml, "model_points": float(self.x_train.shape[0])}

    def _posterior_cache(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None:
            with torch.no_grad():
                L = self._cholesky(self._noisy_gram(self.x_train))
                alpha = torch.cholesky_solve(self.y_train.T[:, :, None], L)
            self._cache = (L, alpha)
        return self._cache

    # -- prediction --------------------------------------------------------------------------------
    def predict(
        self, obs: torch.Tensor, act: torch.Tensor, include_noise: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of y = (Δs, r) in raw units, inputs of any leading shape."""
        lead = obs.shape[:-1]
        xs = self.in_norm(torch.cat([obs, act], dim=-1)).reshape(-1, self.in_dim).double()
        L, alpha = self._posterior_cache()
        k_star = self.kernel(xs, self.x_train)  # [D, B, N]
        mean = (k_star @ alpha).squeeze(-1).T  # [B, D]
        v = torch.linalg.solve_triangular(L, k_star.transpose(1, 2), upper=False)  # [D, N, B]
        var = (self._signal_var()[:, None] - v.pow(2).sum(1)).clamp_min(1e-12).T
        if include_noise:
            var = var + (2 * self.log_noise_std).exp()
        mean = self.out_norm.inverse(mean.float())
        var = var.float() * self.out_norm.std.pow(2)
        return mean.reshape(*lead, self.out_dim), var.reshape(*lead, self.out_dim)

    def begin_rollout(self) -> None:
        """Particles sample the GP's marginal predictive distribution independently at each step."""

    def propagate(
        self, obs: torch.Tensor, act: torch.Tensor, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            mean, var = self.predict(obs, act)
        y = mean + var.sqrt() * torch.randn_like(mean) if sample else mean
        return obs + y[..., : self.obs_dim], (y[..., self.obs_dim] if self.learn_reward else None)

    def mean_step(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mean, _ = self.predict(obs, act)
        return obs + mean[..., : self.obs_dim], (mean[..., self.obs_dim] if self.learn_reward else None)

    @torch.no_grad()
    def disagreement(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Epistemic (posterior) variance Σ_d σ_d²(x) in units of the targets' std ``[N]``."""
        _, var = self.predict(obs, act, include_noise=False)
        return (var / self.out_norm.std.pow(2)).sum(-1)
