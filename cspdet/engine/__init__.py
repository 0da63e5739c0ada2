"""Training, evaluation, inference and checkpoint I/O."""

from .checkpoint import CheckpointError, load_checkpoint, load_state_file, save_checkpoint

__all__ = ["CheckpointError", "load_checkpoint", "load_state_file", "save_checkpoint"]
