"""emergence for transformers.Trainer: EmergenceCallback puts an emergence Monitor into a Hugging Face training run."""

from emergence_transformers.callback import EmergenceCallback, log_keys, trainer_run_overrides
from emergence_transformers.losses import causal_lm_loss

__all__ = ["EmergenceCallback", "causal_lm_loss", "log_keys", "trainer_run_overrides"]
