"""Saved models on the Hugging Face Hub: resolve a hub id to a local folder, and upload a saved folder.

Only the saved-model files are fetched (safetensors weights, config, labels, tokenizer and processor
files); pickled checkpoints are fetched only when the caller opted in to loading them.
"""

from __future__ import annotations

import re
from pathlib import Path

from mmemo.models.model import PICKLED_NAMES

SAVED_MODEL_FILES = ["config.yaml", "labels.json", "model.safetensors", "processors.safetensors", "encoders/**", "README.md"]
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def resolve_model_dir(path_or_hub_id: str | Path, revision: str | None = None, allow_pickle: bool = False,
                      token: str | None = None) -> Path:
    """A local folder (as given, or a run folder's ``best/``), or the hub repository's files, downloaded
    into the huggingface_hub cache (with ``HF_HUB_OFFLINE=1``, only what the cache already holds)."""
    local = Path(path_or_hub_id).expanduser()
    if local.exists():
        return local / "best" if (local / "best" / "config.yaml").exists() else local
    name = str(path_or_hub_id)
    if not _REPO_ID.match(name):
        raise FileNotFoundError(f"{name}: no such model folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(name, revision=revision, token=token,
                                   allow_patterns=SAVED_MODEL_FILES + (list(PICKLED_NAMES) if allow_pickle else []))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise FileNotFoundError(f"{name}: not a local folder, and the Hugging Face Hub could not provide it "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return Path(folder)


def push_folder(folder: str | Path, repo_id: str, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload mmemo model") -> str:
    """Upload a saved-model folder to a (new or existing) model repository; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message)
    return str(info.commit_url if hasattr(info, "commit_url") else info)
