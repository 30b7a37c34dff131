"""Training: one trial from a typed config, reported through a Tracker.

Knows nothing of Ray, MLflow or Hydra (see ARCHITECTURE.md).
"""
