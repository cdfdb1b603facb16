r"""Bootstrap ensembles: an uncertainty-aware dynamics model (notes 9/28).

Planning through a single learned model exploits its errors. The notes' remedy is to estimate the
posterior over models p(φ|D) and plan against it. A bootstrap ensemble approximates samples of
p(φ|D) by training M networks, each on its own resample of the data drawn with replacement:

.. math::
    D_m = \{(s_{i}, a_{i}, s'_{i})\}_{i \sim \mathrm{Uniform}(1..N)}^{N}, \qquad
    \phi_m = \arg\min_\phi \mathcal L(\phi; D_m), \qquad
    p(s'|s,a,D) \approx \frac1M \sum_{m=1}^M p_{\phi_m}(s'|s,a).

Where the data pin the function down the members agree; away from it they disagree, so the
spread of the member means, :math:`\mathrm{Var}_m[\mu_{\phi_m}(s,a)]` (epistemic uncertainty), grows
off-distribution. With Gaussian members (PETS's "probabilistic ensemble") the aleatoric noise
:math:`\sigma^2_\phi` is modelled too. All M members are one batched network
(:class:`core_rl.model_based.dynamics.BatchedMLP`): one ``baddbmm`` per layer, no loop over members.
"""

from __future__ import annotations

from typing import Any

import torch

from core_rl.model_based.dynamics import NeuralDynamics


class BootstrapEnsemble(NeuralDynamics):
    """M networks, member m trained on a bootstrap resample D_m of the data."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_members: int = 5,
        probabilistic: bool = True,
        bootstrap: bool = True,
        **kwargs: Any,
    ):
        super().__init__(obs_dim, act_dim, n_members=n_members, probabilistic=probabilistic, **kwargs)
        self.bootstrap = bootstrap

    def _member_indices(self, n: int) -> torch.Tensor:
        """``[M, n]`` indices drawn with replacement, independently per member."""
        if not self.bootstrap:
            return super()._member_indices(n)
        return torch.randint(0, n, (self.n_members, n), generator=self.generator)

    @torch.no_grad()
    def member_means(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Each member's mean prediction of y = (Δs, r) for the same inputs ``[N, ·]``: ``[M, N, out]``."""
        o = obs.reshape(1, -1, self.obs_dim).expand(self.n_members, -1, -1)
        a = act.reshape(1, -1, self.act_dim).expand(self.n_members, -1, -1)
        mean, _ = self.predict(o, a)
        return mean

    @torch.no_grad()
    def disagreement(self, obs: torch.Tensor, act: torch.Tensor, normalized: bool = True) -> torch.Tensor:
        """Epistemic uncertainty Σ_d Var_m[μ_{φ_m}(s, a)_d] per input ``[N]``.

        With ``normalized`` the variance is measured in units of the target's training std, so that
        every output dimension counts alike.
        """
        means = self.member_means(obs, act)
        if normalized:
            means = means / self.out_norm.std
        return means.var(0, unbiased=False).sum(-1)

    @torch.no_grad()
    def aleatoric_variance(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Mean over members of the predicted noise variance σ²_φ(s, a) ``[N, out]`` (zeros if deterministic)."""
        o = obs.reshape(1, -1, self.obs_dim).expand(self.n_members, -1, -1)
        a = act.reshape(1, -1, self.act_dim).expand(self.n_members, -1, -1)
        mean, var = self.predict(o, a)
        return torch.zeros_like(mean[0]) if var is None else var.mean(0)
