"""`--model gemma-3-1b-it` end to end, offline, against a Hugging Face cache laid out as huggingface_hub writes it.

The cache holds the tiny random Gemma 3 as google/gemma-3-1b-it:

    HF_HOME/hub/models--google--gemma-3-1b-it/
        refs/main                          the commit hash (40 hex digits, no newline)
        blobs/<git sha1 or LFS sha256>     file contents, named by their ETag
        snapshots/<commit>/<file>          symlinks ../../blobs/<etag>
        trees/<commit>.json                the repo's file listing (huggingface_hub >= 2 writes it)
    HF_HOME/hub/.locks/models--google--gemma-3-1b-it/<etag>.lock

huggingface_hub reads HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE once, at import, so everything that
resolves a model runs in a subprocess with those set. HF_ENDPOINT points at a closed local port as well:
if offline mode were ever ignored, nothing would leave the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
from conftest import chat, run_cli, write_jsonl

REPO = "google/gemma-3-1b-it"
COMMIT = "dcc83ea841ab6100d6b47a070329e1ba4cf78752"
# Gemma's .gitattributes sends these to LFS: their ETag (and blob name) is the sha256 of the content;
# every other file's is its git blob sha1.
LFS_PATTERNS = ("*.safetensors", "*.model", "tokenizer.json")
# In the repo on the Hub but not matched by models._PATTERNS, so never downloaded: the listing names
# them, the snapshot lacks them, and offline resolution must still accept the snapshot.
NOT_DOWNLOADED = {
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "README.md": b"# tiny stand-in for gemma-3-1b-it\n",
}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_hub_cache(
    hub: Path, repo: str, files: dict[str, bytes], listed_only: dict[str, bytes], commit: str, listing: bool = True
) -> Path:
    """One snapshot of `repo` in the hub cache `hub`; returns the snapshot directory.

    `listing=False` leaves out trees/<commit>.json, as huggingface_hub < 2 and per-file downloads do.
    """
    storage = hub / ("models--" + repo.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir()
    locks = hub / ".locks" / storage.name
    locks.mkdir(parents=True)
    tree = {}
    for name, data in sorted({**files, **listed_only}.items()):
        if any(fnmatch(name, p) for p in LFS_PATTERNS):
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
            etag = sha256
            tree[name] = {
                "size": len(pointer),
                "blob_id": git_blob_sha1(pointer),
                "lfs_sha256": sha256,
                "lfs_size": len(data),
            }
        else:
            etag = git_blob_sha1(data)
            tree[name] = {"size": len(data), "blob_id": etag}
        if name in files:
            (storage / "blobs" / etag).write_bytes(data)
            (locks / f"{etag}.lock").touch()
            (snapshot / name).symlink_to(Path("..", "..", "blobs", etag))  # relative, as _create_symlink makes it
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    if listing:
        (storage / "trees").mkdir()
        (storage / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": tree}, indent=1))
    return snapshot


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, tiny_model_dir) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    files = {p.name: p.read_bytes() for p in sorted(tiny_model_dir.iterdir()) if p.is_file()}
    write_hub_cache(home / "hub", REPO, files, NOT_DOWNLOADED, COMMIT)
    return home


def snapshot_dir(hub: Path) -> Path:
    return hub / "models--google--gemma-3-1b-it" / "snapshots" / COMMIT


def offline_env(
    hf_home: Path, via: str = "HF_HOME", offline: tuple[str, str] = ("HF_HUB_OFFLINE", "1")
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_")) and k not in ("TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME")
    }
    env[offline[0]] = offline[1]
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # discard port: a request that slips through fails at once
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if via == "HF_HOME":
        env["HF_HOME"] = str(hf_home)  # the hub cache is $HF_HOME/hub
    else:
        env["HF_HOME"] = str(hf_home / "elsewhere")
        env["HF_HUB_CACHE"] = str(hf_home / "hub")
    return env


RESOLVE = """
import json, sys
from mlx_bluey.models import ModelError, resolve_model
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = {"path": str(resolve_model(name, log=lambda m: print("log:", m, file=sys.stderr)))}
    except ModelError as error:
        out[name] = {"error": str(error)}
print(json.dumps(out))
"""


def resolve_offline(hf_home: Path, *names: str, **env) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE, *names],
        env=offline_env(hf_home, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "log:" not in result.stderr, result.stderr  # no fallback, no download chatter
    return json.loads(result.stdout)


def cli(hf_home: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, env=offline_env(hf_home), timeout=300)


def test_the_cache_is_one_huggingface_hub_reads_as_its_own(hf_home):
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    info = scan_cache_dir(hf_home / "hub")
    assert info.warnings == []
    (repo,) = info.repos
    (revision,) = repo.revisions
    assert (repo.repo_id, repo.repo_type, revision.commit_hash, set(revision.refs)) == (REPO, "model", COMMIT, {"main"})
    assert {f.file_name for f in revision.files} == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "tokenizer.model",  # the SentencePiece vocabulary, as in the real Gemma 3 repositories
    }
    snapshot = snapshot_dir(hf_home / "hub")
    assert try_to_load_from_cache(REPO, "config.json", cache_dir=hf_home / "hub") == str(snapshot / "config.json")
    assert (
        os.readlink(snapshot / "model.safetensors")
        == "../../blobs/" + hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("via", ["HF_HOME", "HF_HUB_CACHE"])
def test_registry_name_and_hub_id_resolve_to_the_cached_snapshot(hf_home, via):
    found = resolve_offline(hf_home, "gemma-3-1b-it", REPO, via=via)
    expected = str(snapshot_dir(hf_home / "hub"))
    assert found == {"gemma-3-1b-it": {"path": expected}, REPO: {"path": expected}}


def test_a_cache_without_a_tree_listing_resolves_too(tmp_path, tiny_model_dir):
    files = {p.name: p.read_bytes() for p in sorted(tiny_model_dir.iterdir()) if p.is_file()}
    snapshot = write_hub_cache(tmp_path / "hub", REPO, files, NOT_DOWNLOADED, COMMIT, listing=False)
    assert resolve_offline(tmp_path, "gemma-3-1b-it") == {"gemma-3-1b-it": {"path": str(snapshot)}}


@pytest.mark.parametrize(
    "offline", [("HF_HUB_OFFLINE", "1"), ("HF_HUB_OFFLINE", "true"), ("TRANSFORMERS_OFFLINE", "1")]
)
def test_a_model_missing_from_the_offline_cache_is_a_model_error(hf_home, offline):
    found = resolve_offline(hf_home, "gemma-3-1b-pt", offline=offline)
    assert found["gemma-3-1b-pt"]["error"] == (
        f"cannot download google/gemma-3-1b-pt ({offline[0]}={offline[1]}) and it is not in the local cache; "
        "the embedded default (gemma-3-270m-embedded) works offline"
    )


def test_the_cli_reports_it_without_a_traceback(hf_home, tmp_path):
    data = write_jsonl(tmp_path / "data" / "train.jsonl", [chat("hi", "G'day!")]).parent
    result = cli(hf_home, "train", "--model", "gemma-3-1b-pt", "--data", str(data), "--output", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Error: cannot download google/gemma-3-1b-pt (HF_HUB_OFFLINE=1)" in result.stderr
    assert "embedded default (gemma-3-270m-embedded)" in result.stderr
    assert not (tmp_path / "run").exists()


def test_an_interrupted_download_is_reported_as_incomplete(tmp_path, tiny_model_dir):
    files = {p.name: p.read_bytes() for p in sorted(tiny_model_dir.iterdir()) if p.is_file()}
    write_hub_cache(
        tmp_path / "hub",
        REPO,
        {k: v for k, v in files.items() if k != "model.safetensors"},
        {"model.safetensors": files["model.safetensors"], **NOT_DOWNLOADED},
        COMMIT,
    )
    error = resolve_offline(tmp_path, "gemma-3-1b-it")["gemma-3-1b-it"]["error"]
    assert error == (
        "the cached copy of google/gemma-3-1b-it is incomplete (model.safetensors missing: an interrupted "
        "download?) and cannot be completed (HF_HUB_OFFLINE=1); run once with network access to finish it; "
        "the embedded default (gemma-3-270m-embedded) works offline"
    )


def test_train_then_generate_with_the_registry_name_offline(hf_home, tmp_path):
    cache_before = sorted((str(p), p.is_symlink()) for p in hf_home.rglob("*"))
    rows = [chat(f"question {i}?", "Hooray! Let's play!") for i in range(6)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows[:4])
    write_jsonl(tmp_path / "data" / "valid.jsonl", rows[4:])
    run = tmp_path / "run"
    result = cli(
        hf_home,
        "train",
        "--model",
        "gemma-3-1b-it",
        "--data",
        str(tmp_path / "data"),
        "--output",
        str(run),
        "--iters",
        "2",
        "--batch-size",
        "2",
        "--grad-accumulation",
        "1",
        "--lora-rank",
        "2",
        "--val-every",
        "2",
        "--save-every",
        "2",
        "--max-seq-length",
        "64",
        "--no-progress",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["base_model"] == "gemma-3-1b-it"
    assert manifest["base_model_dir"] == str(snapshot_dir(hf_home / "hub"))
    assert json.loads((run / "adapter_config.json").read_text())["base_model"] == "gemma-3-1b-it"
    assert (run / "adapters.safetensors").exists()

    # The base model by name, then base + adapter with the name taken from adapter_config.json.
    for how in (["--model", "gemma-3-1b-it"], ["--adapter", str(run)]):
        result = cli(hf_home, "generate", *how, "--prompt", "hi", "--max-new-tokens", "4", "--seed", "0")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "Traceback" not in result.stderr
    assert sorted((str(p), p.is_symlink()) for p in hf_home.rglob("*")) == cache_before  # offline: nothing written
