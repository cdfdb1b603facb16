"""Planners over known or learned models: shooting (random, CEM, MPPI), MCTS, LQR, iLQR/DDP."""
