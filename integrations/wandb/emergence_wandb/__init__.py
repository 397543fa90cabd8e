"""Weights & Biases tracker for emergence, found by the core through the ``emergence.trackers`` entry point."""

from emergence_wandb.tracker import WandbTracker

__all__ = ["WandbTracker"]
