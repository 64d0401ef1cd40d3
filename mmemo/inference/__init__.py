"""Inference: ``EmotionRecognizer`` (a saved model, ready for ``predict``), the inputs it takes, and
``Prediction``."""

from mmemo.errors import InputError
from mmemo.inference.enrollment import Enrollment
from mmemo.inference.inputs import InputPreparer, check_input_types, make_example, with_video_audio
from mmemo.inference.prediction import Prediction
from mmemo.inference.recognizer import EmotionRecognizer
from mmemo.inference.streaming import EmotionStream
from mmemo.inference.timeline import Timeline, TimelineRow

__all__ = ["EmotionRecognizer", "EmotionStream", "Enrollment", "InputError", "InputPreparer", "Prediction", "Timeline",
           "TimelineRow", "check_input_types", "make_example", "with_video_audio"]
