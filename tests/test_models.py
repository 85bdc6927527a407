"""Model names: registry, directories, the embedded default, and clear errors for the rest."""

import pytest

from mlx_bluey import models
from mlx_bluey.models import REGISTRY, ModelError, resolve_model


def test_registry_names_point_at_google_repos():
    assert REGISTRY == {
        "gemma-3-270m": "google/gemma-3-270m",
        "gemma-3-270m-it": "google/gemma-3-270m-it",
        "gemma-3-1b-pt": "google/gemma-3-1b-pt",
        "gemma-3-1b-it": "google/gemma-3-1b-it",
    }


def test_no_name_means_the_embedded_model(embedded_dir):
    assert resolve_model(None, log=lambda _: None) == embedded_dir


def test_a_directory_is_used_as_is(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir


def test_missing_directory_and_unknown_name(tmp_path):
    with pytest.raises(ModelError, match="model directory not found"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="unknown model 'gemma-9'"):
        resolve_model("gemma-9")


def _refuse(error):
    def download(repo, **_):
        raise error

    return download


def test_gated_download_explains_the_licence(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from types import SimpleNamespace

    response = SimpleNamespace(headers={}, request=None, status_code=403)  # what the hub answers, minus the network
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _refuse(GatedRepoError("403 gated", response=response)))
    with pytest.raises(ModelError, match=r"google/gemma-3-1b-it is gated: accept the Gemma licence .* `hf auth login`"):
        resolve_model("gemma-3-1b-it")


def test_offline_270m_falls_back_to_the_embedded_copy(monkeypatch, embedded_dir):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setattr(huggingface_hub, "snapshot_download", _refuse(LocalEntryNotFoundError("offline")))
    messages = []
    assert resolve_model("gemma-3-270m", log=messages.append) == embedded_dir
    assert "using the embedded copy" in messages[0]
    with pytest.raises(ModelError, match="cannot download google/gemma-3-1b-pt"):
        resolve_model("gemma-3-1b-pt")
    assert models.EMBEDDED_EQUIVALENT == "google/gemma-3-270m"
