"""Which model to load: registry names, Hugging Face ids, local directories, the embedded default.

    resolve_model(None)            -> the embedded google/gemma-3-270m (converted once, cached)
    resolve_model("gemma-3-1b-it") -> google/gemma-3-1b-it via huggingface_hub
    resolve_model("./my-model")    -> that directory
"""

from __future__ import annotations

import os
from pathlib import Path

from .embedded import EMBEDDED_NAME, ensure_embedded_model

# Short names users type -> Hugging Face repos. All four are gated behind Google's Gemma terms.
REGISTRY = {
    "gemma-3-270m": "google/gemma-3-270m",
    "gemma-3-270m-it": "google/gemma-3-270m-it",
    "gemma-3-1b-pt": "google/gemma-3-1b-pt",
    "gemma-3-1b-it": "google/gemma-3-1b-it",
}
# The embedded package holds exactly this repo's weights, so it can stand in when offline.
EMBEDDED_EQUIVALENT = "google/gemma-3-270m"
DEFAULT_MODEL = EMBEDDED_NAME
_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja"]


class ModelError(Exception):
    """A model that cannot be resolved; the message says what to do."""


def resolve_model(name: str | None, log=print) -> Path:
    if name in (None, "", "embedded", EMBEDDED_NAME):
        return ensure_embedded_model(log=log)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{path}: not a model directory (no config.json)")
        return path
    if path.suffix or name.startswith((".", "/", "~")):
        raise ModelError(f"model directory not found: {path}")
    repo = REGISTRY.get(name, name)
    if "/" not in repo:
        known = ", ".join([EMBEDDED_NAME, *REGISTRY])
        raise ModelError(f"unknown model {name!r}: use one of {known}, a Hugging Face id or a directory")
    return _download(repo, log)


def _download(repo: str, log) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo, allow_patterns=_PATTERNS))
    except GatedRepoError as error:
        raise ModelError(
            f"{repo} is gated: accept the Gemma licence on https://huggingface.co/{repo} and log in "
            "with `hf auth login` (or set HF_TOKEN), then run again"
        ) from error
    except RepositoryNotFoundError as error:
        raise ModelError(
            f"model {repo!r} not found on Hugging Face (or it is private: log in with `hf auth login`)"
        ) from error
    except (LocalEntryNotFoundError, OSError) as error:
        if repo == EMBEDDED_EQUIVALENT:
            log(f"cannot reach Hugging Face for {repo}; using the embedded copy of the same model")
            return ensure_embedded_model(log=log)
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelError(
            f"cannot download {repo} ({'HF_HUB_OFFLINE=1' if offline else 'no network?'}) and it is "
            f"not in the local cache; the embedded default ({EMBEDDED_NAME}) works offline"
        ) from error
