"""Data-parallel training: two processes on localhost over MLX's ring backend (`mlx.launch`), tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import chat, write_jsonl

LAUNCH = [str(Path(sys.executable).parent / "mlx.launch"), "--backend", "ring", "-n", "2", "--"]


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    lengths = ["Hooray!", "Mum and Dad are playing shops with us.", "Bingo!", "Let's play keepy uppy, Dad!"]
    write_jsonl(data / "train.jsonl", [chat(f"hi {i}", lengths[i % 4] * (1 + i % 3)) for i in range(12)])
    write_jsonl(data / "valid.jsonl", [chat("hello", "G'day!"), chat("bye", "See ya, Bingo!")])
    return data


def _train(tiny_model_dir, data, output, *extra, launch=False):
    command = [sys.executable, "-m", "mlx_bluey.cli", "train", "--model", str(tiny_model_dir), "--data", str(data)]
    command += ["--output", str(output), "--iters", "6", "--learning-rate", "1e-2", "--lora-rank", "4"]
    command += ["--lora-dropout", "0", "--val-every", "3", "--save-every", "3", "--no-progress", *extra]
    return subprocess.run((LAUNCH if launch else []) + command, capture_output=True, text=True, timeout=600)


def _rows(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "batch",
    [
        ["--batch-size", "4", "--grad-accumulation", "1"],  # each process: half of every batch of 4
        ["--batch-size", "1", "--grad-accumulation", "4"],  # each process: 2 of the step's 4 micro-batches
    ],
)
def test_two_processes_make_the_steps_of_one(tiny_model_dir, tmp_path, batch):
    """The same global batch on 2 processes and on 1: the same losses and adapter."""
    from safetensors.numpy import load_file

    data = _data(tmp_path)
    one = _train(tiny_model_dir, data, tmp_path / "one", *batch)
    two = _train(tiny_model_dir, data, tmp_path / "two", *batch, launch=True)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    single, parallel = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["step"] for r in parallel] == [1, 2, 3, 4, 5, 6]  # rank 0 alone wrote the metrics
    # the same global batches: the summed losses and token counts of both shares are the single process's
    assert [r["trained_tokens"] for r in parallel] == [r["trained_tokens"] for r in single]
    np.testing.assert_allclose([r["train_loss"] for r in parallel], [r["train_loss"] for r in single], rtol=1e-4)
    np.testing.assert_allclose(
        [r["val_loss"] for r in parallel if "val_loss" in r],
        [r["val_loss"] for r in single if "val_loss" in r],
        rtol=1e-4,
    )
    a, b = (
        load_file(str(tmp_path / "one" / "adapters.safetensors")),
        load_file(str(tmp_path / "two" / "adapters.safetensors")),
    )
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-3, atol=1e-5)
    assert (tmp_path / "two" / "manifest.json").exists() and "done: train loss" in two.stdout
    assert two.stdout.count("done: train loss") == 1  # one process speaks


def test_a_batch_that_does_not_divide_across_the_processes_is_refused(tiny_model_dir, tmp_path):
    args = ["--batch-size", "3", "--grad-accumulation", "1"]
    result = _train(tiny_model_dir, _data(tmp_path), tmp_path / "out", *args, launch=True)
    # mlx.launch itself exits 0 and reports each process's exit code (mlx 0.32.4)
    assert "exited with code 1" in result.stderr
    assert "neither grad_accumulation 1 nor batch_size 3 divides across 2 processes" in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("same", [True, False])
def test_processes_that_disagree_on_the_run_stop_before_the_first_step(tmp_path, same):
    script = tmp_path / "agree.py"
    script.write_text(
        "import mlx.core as mx\n"
        "from mlx_bluey.distributed import DistributedError, agree, world\n"
        "group = world()\n"
        f"fingerprint = {{'data': 'abc' if {same} or group.rank() == 0 else 'xyz'}}\n"
        "try:\n"
        "    agree(group, fingerprint)\n"
        "    print('agreed', flush=True)\n"
        "except DistributedError as error:\n"
        "    print('refused:', error, flush=True)\n"
    )
    result = subprocess.run(LAUNCH + [sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    if same:
        assert result.stdout.count("agreed") == 2
    else:
        assert result.stdout.count("refused: the processes do not agree on the run") == 2


def _rank_pids(marker: str) -> dict[int, int]:
    import os

    ranks = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"mlx_bluey" in cmdline:
            rank = next((e.split(b"=")[1] for e in environ if e.startswith(b"MLX_RANK=")), None)
            if rank is not None:
                ranks[int(rank)] = int(pid)
    return ranks


# Each rank in a working directory of its own, as on hosts that share no disk: the output path is relative.
OWN_DIRECTORY = (
    "import os, runpy, sys\n"
    "os.chdir(sys.argv[1 + int(os.environ['MLX_RANK'])])\n"
    "sys.argv = ['mlx_bluey', *sys.argv[3:]]\n"
    "runpy.run_module('mlx_bluey.cli', run_name='__main__')\n"
)


@pytest.mark.one_kernel  # the resumed and the whole run compare on the same kernel
def test_a_killed_process_stops_the_group_and_resume_finishes_the_run(tiny_model_dir, tmp_path):
    """kill -9 of rank 1 mid-run: rank 0 stops too (ring: the peer's connection is lost), the launch ends,
    and the group launched again with --resume ends where an uninterrupted run ends. The ranks share no
    directory: rank 1 never sees rank 0's checkpoints and resumes from what rank 0 sends it."""
    import os
    import signal
    import time

    data, hosts = _data(tmp_path), [tmp_path / "host0", tmp_path / "host1"]
    for host in hosts:
        host.mkdir()
    out = hosts[0] / "out"
    args = ["--batch-size", "4", "--grad-accumulation", "1", "--iters", "30", "--save-every", "3"]
    args += ["--keep-checkpoints", "2", "--val-every", "0"]
    command = LAUNCH + [sys.executable, "-c", OWN_DIRECTORY, *map(str, hosts), "train"]
    command += ["--model", str(tiny_model_dir), "--data", str(data), "--output", "out", "--learning-rate", "1e-2"]
    command += ["--lora-rank", "4", "--lora-dropout", "0", "--no-progress", *args]
    launch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("checkpoints/step_*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    ranks = _rank_pids(str(hosts[1]))
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = launch.communicate(timeout=120)  # bounded: the launch ends instead of waiting forever
    steps = [r["step"] for r in _rows(out)]
    assert steps and steps[-1] < 30, "the run finished before the kill: make it longer"
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "resuming from" in resumed.stdout, (
        resumed.stdout[-2000:] + resumed.stderr[-2000:]
    )
    assert [r["step"] for r in _rows(out)] == list(range(1, 31))
    assert list(hosts[1].iterdir()) == []  # rank 1 wrote nothing, and had nothing to read
    whole = _train(tiny_model_dir, data, tmp_path / "whole", *args, launch=True)
    assert whole.returncode == 0, whole.stderr[-2000:]
    np.testing.assert_allclose(
        [r["train_loss"] for r in _rows(out)], [r["train_loss"] for r in _rows(tmp_path / "whole")], rtol=1e-4
    )


@pytest.mark.one_kernel  # process control: a timeout, no figures
def test_a_process_that_stops_answering_ends_the_group_after_the_timeout(tiny_model_dir, tmp_path):
    """SIGSTOP keeps rank 1's connections open but silent, as a host that dropped off the network: rank 0
    must give up after distributed_timeout instead of waiting forever."""
    import os
    import signal
    import time

    data, out = _data(tmp_path), tmp_path / "out"
    command = LAUNCH + [sys.executable, "-m", "mlx_bluey.cli", "train", "--model", str(tiny_model_dir)]
    command += ["--data", str(data), "--output", str(out), "--iters", "1000", "--save-every", "3", "--val-every", "0"]
    command += ["--batch-size", "4", "--grad-accumulation", "1", "--no-progress", "--distributed-timeout", "5"]
    launch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("checkpoints/step_*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    ranks = _rank_pids(str(out))
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        while ranks[0] in _rank_pids(str(out)).values() and time.monotonic() - stopped < 60:
            time.sleep(0.2)
        waited = time.monotonic() - stopped
    finally:
        os.kill(ranks[1], signal.SIGKILL)
    _, stderr = launch.communicate(timeout=60)
    # rank 0's watchdog starts when it starts waiting in the all-reduce, which can be before the SIGSTOP lands
    # (rank 1 stopped in the middle of the exchange): the stop is seen up to a step early, measured 4.93 s once
    # on a busy machine. The message below says which timer fired.
    assert 4 <= waited < 60, waited
    assert "no answer from the other processes in 5 s (distributed_timeout)" in stderr, stderr[-2000:]
    assert list(out.glob("checkpoints/step_*")), "the checkpoints are kept for --resume"
