"""mmemo: multimodal emotion recognition. Raw media in, honest numbers out."""

from mmemo.ablation import ablate
from mmemo.config import Config, ConfigError, load_config
from mmemo.inference import EmotionRecognizer, InputError, Prediction
from mmemo.labels import LabelSet, get_label_set
from mmemo.models.model import EmotionModel, EmotionModelOutput
from mmemo.registry import list_models
from mmemo.training.adapt import AdaptResult, adapt_text_encoder
from mmemo.training.trainer import TrainResult, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "AdaptResult",
    "Config",
    "ConfigError",
    "EmotionModel",
    "EmotionModelOutput",
    "EmotionRecognizer",
    "InputError",
    "LabelSet",
    "Prediction",
    "TrainResult",
    "ablate",
    "adapt_text_encoder",
    "evaluate",
    "get_label_set",
    "list_models",
    "load_config",
    "train",
]
