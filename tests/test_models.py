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


@pytest.mark.real
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


def _http_library():
    """The HTTP library huggingface_hub's errors are built on (httpx2 in huggingface_hub 2.x)."""
    import importlib

    from huggingface_hub import errors

    return importlib.import_module(errors.Response.__module__.split(".")[0])


def _hub_answer(status: int, repo: str, **headers: str):
    """The Hub's answer to GET /api/models/{repo}/revision/main."""
    http = _http_library()
    request = http.Request("GET", f"https://huggingface.co/api/models/{repo}/revision/main")
    return http.Response(status, headers=headers, request=request)


def _hub_error(status: int, repo: str, **headers: str):
    """The exception huggingface_hub itself raises for that answer (hf_raise_for_status picks the class)."""
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import hf_raise_for_status

    with pytest.raises(HfHubHTTPError) as caught:
        hf_raise_for_status(_hub_answer(status, repo, **headers))
    return caught.value


GATED = dict(
    status=403,
    headers={"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model google/gemma-3-1b-it is restricted."},
)
NOT_FOUND = dict(status=404, headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
BAD_TOKEN = dict(status=401, headers={"X-Error-Message": "Invalid credentials in Authorization header"})
GATED_MESSAGE = (
    "google/gemma-3-1b-it is gated: accept the Gemma licence on https://huggingface.co/google/gemma-3-1b-it "
    "and log in with `hf auth login` (or set HF_TOKEN), then run again"
)
NOT_FOUND_MESSAGE = (
    "model 'google/gemma-3-9b-it' not found on Hugging Face (or it is private: log in with `hf auth login`)"
)
BAD_TOKEN_MESSAGE = (
    "Hugging Face refused google/gemma-3-1b-it (HTTP 401: Invalid credentials in Authorization "
    "header); check your token (`hf auth login` or HF_TOKEN)"
)


def test_gated_download_explains_the_licence(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    error = _hub_error(GATED["status"], "google/gemma-3-1b-it", **GATED["headers"])
    assert type(error) is GatedRepoError
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _refuse(error))
    with pytest.raises(ModelError) as caught:
        resolve_model("gemma-3-1b-it")
    assert str(caught.value) == GATED_MESSAGE


def test_missing_repo_is_named(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    error = _hub_error(NOT_FOUND["status"], "google/gemma-3-9b-it", **NOT_FOUND["headers"])
    assert type(error) is RepositoryNotFoundError
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _refuse(error))
    with pytest.raises(ModelError) as caught:
        resolve_model("google/gemma-3-9b-it")
    assert str(caught.value) == NOT_FOUND_MESSAGE


@pytest.mark.parametrize(
    "answer, repo, message",
    [
        (GATED, "gemma-3-1b-it", GATED_MESSAGE),
        (NOT_FOUND, "google/gemma-3-9b-it", NOT_FOUND_MESSAGE),
        (BAD_TOKEN, "gemma-3-1b-it", BAD_TOKEN_MESSAGE),
    ],
)
def test_the_real_snapshot_download_against_a_refusing_hub(monkeypatch, tmp_path, answer, repo, message):
    """snapshot_download itself, online, with an empty cache; the Hub is an in-process transport, not the network."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    http = _http_library()
    requests = []

    def hub(request):
        requests.append(str(request.url))
        return http.Response(answer["status"], headers=answer["headers"], request=request)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # Online, huggingface_hub >= 2 also fetches {ENDPOINT}/api/agent-harnesses (once a day) and caches it here.
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"), raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_test")  # so no token file of this machine is read
    _http.set_client_factory(
        lambda: http.Client(transport=http.MockTransport(hub), event_hooks={"request": [_http.hf_request_event_hook]})
    )
    try:
        with pytest.raises(ModelError) as caught:
            resolve_model(repo)
    finally:
        _http.set_client_factory(_http.default_client_factory)
    assert str(caught.value) == message
    repo_id = REGISTRY.get(repo, repo)
    assert f"{constants.ENDPOINT}/api/models/{repo_id}/revision/main" in requests
    assert all(url.startswith(constants.ENDPOINT + "/api/") for url in requests)
    assert not (tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots").exists()


def test_an_invalid_hub_id_is_a_model_error():
    with pytest.raises(ModelError, match="'google/gemma 3' is not a Hugging Face id"):
        resolve_model("google/gemma 3")


@pytest.mark.real
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
