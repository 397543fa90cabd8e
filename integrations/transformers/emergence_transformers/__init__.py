"""emergence for transformers.Trainer: EmergenceCallback puts an emergence Monitor into a Hugging Face training run."""

from emergence_transformers.callback import EmergenceCallback, log_keys, trainer_run_overrides

__all__ = ["EmergenceCallback", "log_keys", "trainer_run_overrides"]
