"""emergence for Lightning: EmergenceCallback puts an emergence Monitor into a Lightning training run."""

from emergence_lightning.callback import EmergenceCallback

__all__ = ["EmergenceCallback"]
