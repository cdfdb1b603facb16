"""safety: constrained MDPs and safe-exploration agents (issue 8), built on core_rl's PG/TRPO/PPO core."""
