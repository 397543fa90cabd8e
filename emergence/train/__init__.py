"""Training: the loop, optimizers and schedules, checkpoints."""

from emergence.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from emergence.train.loop import StepResult, Trainer, TrainingDiverged, answer_logits_and_targets, answer_loss

__all__ = [
    "StepResult",
    "Trainer",
    "TrainingDiverged",
    "answer_logits_and_targets",
    "answer_loss",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]
