"""autotune: an RL hyperparameter sampler for Optuna (issue 7), built on core_rl's policy gradient."""
