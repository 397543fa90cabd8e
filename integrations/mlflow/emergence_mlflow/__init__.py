"""MLflow tracker for emergence, found by the core through the ``emergence.trackers`` entry point."""

from emergence_mlflow.tracker import MlflowTracker

__all__ = ["MlflowTracker"]
