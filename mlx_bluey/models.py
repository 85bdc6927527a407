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
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo, allow_patterns=_PATTERNS))
    except HFValidationError as error:
        raise ModelError(f"{repo!r} is not a Hugging Face id (owner/name): {error}") from error
    except GatedRepoError as error:
        raise ModelError(
            f"{repo} is gated: accept the Gemma licence on https://huggingface.co/{repo} and log in "
            "with `hf auth login` (or set HF_TOKEN), then run again"
        ) from error
    except RepositoryNotFoundError as error:
        raise ModelError(
            f"model {repo!r} not found on Hugging Face (or it is private: log in with `hf auth login`)"
        ) from error
    except HfHubHTTPError as error:  # the Hub answered (so not "no network"), e.g. 401 for an invalid token
        status = getattr(error.response, "status_code", None)
        detail = f": {error.server_message}" if error.server_message else ""
        advice = "check your token (`hf auth login` or HF_TOKEN)" if status in (401, 403) else "try again later"
        raise ModelError(f"Hugging Face refused {repo} (HTTP {status}{detail}); {advice}") from error
    except (LocalEntryNotFoundError, OSError) as error:
        if repo == EMBEDDED_EQUIVALENT:
            log(f"cannot reach Hugging Face for {repo}; using the embedded copy of the same model")
            return ensure_embedded_model(log=log)
        reason = _offline_reason() or "no network?"
        snapshot = getattr(error, "snapshot_path", None)  # IncompleteSnapshotError, huggingface_hub >= 2
        if snapshot is None:
            problem = f"cannot download {repo} ({reason}) and it is not in the local cache"
        else:
            missing = ", ".join(_missing_files(repo, Path(snapshot))) or "some files"
            problem = (
                f"the cached copy of {repo} is incomplete ({missing} missing: an interrupted download?) "
                f"and cannot be completed ({reason}); run once with network access to finish it"
            )
        raise ModelError(f"{problem}; the embedded default ({EMBEDDED_NAME}) works offline") from error


def _offline_reason() -> str | None:
    """The variable that put huggingface_hub offline ("HF_HUB_OFFLINE=1"), or None when it is online.

    The hub reads it once, at import, and accepts 1/true/yes/on in either variable; its own parsed value decides.
    """
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return None
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name}={os.environ[name]}"
    return "offline mode"


def _missing_files(repo: str, snapshot: Path) -> list[str]:
    """Files the cached listing of `repo` promises (after _PATTERNS) that `snapshot` lacks; [] if unknown."""
    try:
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.utils import filter_repo_objects

        wanted = filter_repo_objects([f.path for f in get_cached_repo_tree(repo)], allow_patterns=_PATTERNS)
        return sorted(p for p in wanted if not (snapshot / p).is_file())
    except Exception:  # an older huggingface_hub, or no listing: the message does without the names
        return []
