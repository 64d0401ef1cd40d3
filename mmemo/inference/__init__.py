"""Inference: ``EmotionRecognizer`` (a saved model, ready for ``predict``), the inputs it takes, and
``Prediction``."""

from mmemo.errors import InputError
from mmemo.inference.inputs import InputPreparer, check_input_types, make_example, with_video_audio
from mmemo.inference.prediction import Prediction
from mmemo.inference.recognizer import EmotionRecognizer

__all__ = ["EmotionRecognizer", "InputError", "InputPreparer", "Prediction", "check_input_types", "make_example",
           "with_video_audio"]
