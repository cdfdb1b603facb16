"""Kept for old imports: the store and run lifecycle live in :mod:`core_rl.common.runs`."""

from core_rl.common.runs import artifact_root, data_dir, default_tracking_uri, get_experiment_id, setup_tracking

__all__ = ["artifact_root", "data_dir", "default_tracking_uri", "get_experiment_id", "setup_tracking"]
