"""A wheel of the package, installed away from the checkout, runs `generate`, `evaluate` and `serve` from a
directory that is not the checkout: nothing in the library may assume the checkout is the working directory.

The wheel is built from a copy of the checkout's files (git's list: no stale build/ output can slip in) and
installed with --target into a temporary directory that leads PYTHONPATH; the checkout's editable install is
still importable, so every test first checks which copy of mlx_bluey runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _copy_checkout(destination: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_symlink() or source.is_file():  # a file deleted in the working tree is left out
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name, follow_symlinks=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    source, wheels, target = (tmp_path_factory.mktemp(n) for n in ("source", "wheels", "site"))
    _copy_checkout(source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], check=True)
    (wheel,) = wheels.glob("mlx_bluey-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return target


def _environment(installed: Path, **extra: str) -> dict:
    """This process's environment without MLX_BLUEY_WEB_*, with the installed copy leading PYTHONPATH."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLX_BLUEY_WEB")}
    return {**environment, "PYTHONPATH": str(installed), **extra}


def _run(installed: Path, cwd: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = _environment(installed)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, **kwargs)


def test_the_installed_copy_runs_and_carries_its_data(installed, tmp_path):
    script = "import mlx_bluey.data_files as d; print(d.__file__); print(d.located('data/eval/prompts.jsonl'))"
    module, prompts = _run(installed, tmp_path, "-c", script, check=True).stdout.split()
    assert Path(module).is_relative_to(installed)  # not the checkout's editable install
    assert Path(prompts) == installed / "mlx_bluey" / "bundled_data" / "eval" / "prompts.jsonl"
    assert Path(prompts).read_bytes() == (ROOT / "data" / "eval" / "prompts.jsonl").read_bytes()


def test_generate_from_another_directory(installed, tmp_path, tiny_model_dir):
    result = _run(
        installed, tmp_path, "-m", "mlx_bluey.cli", "generate", "--model", str(tiny_model_dir),
        "--prompt", "hello", "--max-new-tokens", "4", "--seed", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_evaluate_from_another_directory_uses_the_packaged_prompts_and_data(installed, tmp_path, tiny_model_dir):
    result = _run(
        installed, tmp_path, "-m", "mlx_bluey.cli", "evaluate", "--model", str(tiny_model_dir), "--limit", "2",
        "--samples", "1", "--no-base-likelihood", "--max-new-tokens", "4", "--long-reply-tokens", "4",
        "--output", "report",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "report" / "results.json").read_text())["config"]
    bundled = installed / "mlx_bluey" / "bundled_data"
    assert config["train_data"] == str(bundled / "bluey" / "train.jsonl")
    assert config["assistant_replies"] == "data/eval/assistant_replies.jsonl"  # the default, as given
    assert (tmp_path / "report" / "report.md").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_from_another_directory(installed, tmp_path, tiny_export):
    refused = _run(installed, tmp_path, "-m", "mlx_bluey.cli", "serve", str(tiny_export), timeout=60)
    assert refused.returncode == 1 and "MLX_BLUEY_WEB_MODULES" in refused.stderr  # the wheel has no node_modules
    port = _free_port()
    environment = _environment(installed, MLX_BLUEY_WEB_MODULES=str(ROOT / "mlx_bluey" / "web" / "node_modules"))
    command = [sys.executable, "-m", "mlx_bluey.cli", "serve", str(tiny_export), "--port", str(port)]
    server = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        page = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert page == (ROOT / "mlx_bluey" / "web" / "index.html").read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/vendor/transformers.min.js", timeout=5) as response:
            assert response.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
