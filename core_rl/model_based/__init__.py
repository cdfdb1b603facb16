"""Model-based RL (notes 9/21–10/5).

* models: :mod:`.dynamics` (deterministic/Gaussian networks predicting Δs and r, normalized, trained
  on the shared replay buffer), :mod:`.ensemble` (bootstrap ensembles as batched matmuls), :mod:`.bnn`
  (mean-field variational BNN), :mod:`.gp` (exact GP, ARD RBF, marginal likelihood),
  :mod:`.local_models` (time-varying linear-Gaussian), :mod:`.vae` (VAE observation model and latent
  dynamics for image POMDPs), :mod:`.env_models` (known dynamics/rewards in torch);
* planners: :mod:`.planners.shooting` (random shooting, CEM, MPPI, PETS trajectory sampling),
  :mod:`.planners.mcts` (UCT), :mod:`.planners.lqr` (Riccati), :mod:`.planners.ilqr` (iLQR/DDP);
* agents: :mod:`.mpc` (``mpc``/``pets``), :mod:`.mbpo` (``mbpo``, or any off-policy learner);
* policies through models: :mod:`.policy_through_model` (BPTT, dual gradient descent / collocation).
"""
