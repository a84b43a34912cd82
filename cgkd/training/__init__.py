"""Training: datasets and splits, losses, the trainer (checkpoints, resume, fine-tuning),
ensemble labels and the screening of hard-target frames."""

from cgkd.training.dataset import Splits, Targets, TrainingData
from cgkd.training.losses import LossSettings, LossWeights
from cgkd.training.screening import ScreeningSettings, frame_descriptors, select_frames
from cgkd.training.targets import label_frames
from cgkd.training.trainer import TrainResult, TrainSettings, evaluate, train_potential

__all__ = [
    "LossSettings",
    "LossWeights",
    "ScreeningSettings",
    "Splits",
    "Targets",
    "TrainResult",
    "TrainSettings",
    "TrainingData",
    "evaluate",
    "frame_descriptors",
    "label_frames",
    "select_frames",
    "train_potential",
]
