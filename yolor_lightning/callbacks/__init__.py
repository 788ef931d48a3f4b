"""Lightning callbacks and plugins of the training recipe."""

from yolor_lightning.callbacks.checkpoint_io import AtomicCheckpointIO
from yolor_lightning.callbacks.ema import RampedEMA
from yolor_lightning.callbacks.media import ValidationMedia
from yolor_lightning.callbacks.threads import EvaluationThreads

__all__ = ["AtomicCheckpointIO", "EvaluationThreads", "RampedEMA", "ValidationMedia"]
