"""mmemo: multimodal emotion recognition. Raw media in, honest numbers out.

Importing the package registers every built-in encoder, fusion, dataset reader and loss term, so a config
can name any of them.
"""

from mmemo import data, models  # noqa: F401  (registries: readers, encoders, fusions)
from mmemo.ablation import ablate
from mmemo.config import Config, load_config
from mmemo.errors import CheckpointError, ConfigError, DataError, InputError, MediaError, MmemoError
from mmemo.inference import EmotionRecognizer, Prediction
from mmemo.labels import LabelSet, get_label_set, register_label_set
from mmemo.models.model import EmotionModel, EmotionModelOutput
from mmemo.registry import list_models
from mmemo.training import loss_terms  # noqa: F401  (registry: loss terms)
from mmemo.training.adapt import AdaptResult, adapt_text_encoder
from mmemo.training.callbacks import Callback
from mmemo.training.evaluate import evaluate
from mmemo.training.trainer import Trainer, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "AdaptResult",
    "Callback",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "EmotionModel",
    "EmotionModelOutput",
    "EmotionRecognizer",
    "InputError",
    "LabelSet",
    "MediaError",
    "MmemoError",
    "Prediction",
    "Trainer",
    "TrainResult",
    "ablate",
    "adapt_text_encoder",
    "evaluate",
    "get_label_set",
    "list_models",
    "load_config",
    "register_label_set",
    "train",
]
