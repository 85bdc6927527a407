"""Training on a tiny random Gemma 3: exact parameter counts, loss parity, resume after kill -9."""

import json
import signal
import subprocess
import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import (
    TINY_CONFIG,
    TINY_TRAINING,
    chat,
    model_with_live_adapters,
    tiny_train_config,
    train_command,
    write_jsonl,
)
from mlx.utils import tree_flatten

from mlx_bluey.config import TrainConfig
from mlx_bluey.head_loss import make_numpy_head_loss, make_numpy_head_loss_value, make_two_pass_step, mlx_head_loss
from mlx_bluey.train import apply_adapters, count_trainable, load_base, make_loss, train
from mlx_bluey.trainer import TrainingCallback

REPLIES = [
    "Yes!",
    "Heaps of fun.",
    "Bingo and me played shops all arvo.",
    "No way!",
    "I reckon it's a game.",
    "Dad is a horsey and Mum laughs.",
    "Hooray!",
    "Let's play keepy uppy with the balloon.",
]


@pytest.fixture()
def tiny_data(tmp_path):
    rows = [chat(f"question {i}?", REPLIES[i % len(REPLIES)] * (1 + i % 3)) for i in range(20)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows[:16])
    write_jsonl(tmp_path / "data" / "valid.jsonl", rows[16:])
    return tmp_path / "data"


def test_trainable_parameters_by_arithmetic(tiny_model_dir):
    model, _, _ = load_base(tiny_model_dir, "float32")
    apply_adapters(model, TrainConfig(lora_rank=4))
    h, q, kv, ffn, r = 32, 2 * 16, 1 * 16, 64, 4
    # per block: q, k, v, o, gate, up, down each gain r * (d_in + d_out)
    per_block = r * ((h + q) + (h + kv) + (h + kv) + (q + h) + (h + ffn) + (h + ffn) + (ffn + h))
    assert per_block == 4 * (64 + 48 + 48 + 64 + 96 + 96 + 96) == 2048
    assert count_trainable(model) == TINY_CONFIG["num_hidden_layers"] * per_block == 4096


def test_numpy_head_matches_mlx_head(tiny_model_dir):
    model = model_with_live_adapters(tiny_model_dir)
    rng = np.random.default_rng(0)
    inputs = mx.array(rng.integers(7, 100, (3, 11)).astype(np.int32))
    targets = mx.array(rng.integers(7, 100, (3, 11)).astype(np.int32))
    positions = mx.array([0, 4, 5, 12, 20, 21, 32])
    hidden = model.model(inputs).reshape(-1, 32)[positions]
    picked = targets.reshape(-1)[positions]
    fast = make_numpy_head_loss(model)
    want = mlx_head_loss(model, hidden, picked).item()
    assert fast(model, hidden, picked).item() == pytest.approx(want, rel=1e-5)
    assert make_numpy_head_loss_value(model)(model, hidden, picked).item() == pytest.approx(want, rel=1e-5)
    slow_loss, slow_grads = nn.value_and_grad(model, make_loss(model, head_trainable=True))(
        model, inputs, targets, positions
    )
    fast_loss, fast_grads = nn.value_and_grad(model, make_loss(model, head_trainable=False))(
        model, inputs, targets, positions
    )
    assert fast_loss.item() == pytest.approx(slow_loss.item(), rel=1e-5)
    for (name, a), (_, b) in zip(tree_flatten(slow_grads), tree_flatten(fast_grads)):
        # float32 sums in a different order: equal to 1e-5 of each tensor's largest entry
        assert mx.abs(a - b).max().item() <= 1e-5 * mx.abs(a).max().item(), name


def test_loss_only_at_supervised_positions_equals_masked_full_loss(tiny_model_dir):
    model, _, _ = load_base(tiny_model_dir, "float32")
    rng = np.random.default_rng(1)
    inputs = mx.array(rng.integers(7, 100, (2, 9)).astype(np.int32))
    targets = mx.array(rng.integers(7, 100, (2, 9)).astype(np.int32))
    mask = np.zeros((2, 9), bool)
    mask[0, 3:7] = mask[1, 1:9] = True
    full = nn.losses.cross_entropy(model(inputs), targets)  # [2, 9], the mlx-lm way: every position
    expected = (full * mx.array(mask)).sum().item()
    got = make_loss(model, head_trainable=False)(
        model, inputs, targets, mx.array(np.flatnonzero(mask).astype(np.int32))
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)


_config = tiny_train_config


def _losses(output):
    return [json.loads(line)["train_loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_training_writes_every_artifact_and_lowers_the_loss(tiny_model_dir, tiny_data, tmp_path):
    output = tmp_path / "run"
    train(_config(tiny_model_dir, tiny_data, output, iters=12), log=lambda _: None)
    names = sorted(p.name for p in output.iterdir())
    assert names == [
        "adapter_config.json",
        "adapters.safetensors",
        "checkpoints",
        "loss_curve.png",
        "manifest.json",
        "metrics.jsonl",
    ]
    losses = _losses(output)
    assert len(losses) == 12 and losses[-1] < losses[0]
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6, 9, 12]
    assert all(r["trained_tokens_per_second"] > 0 and r["peak_memory_gb"] > 0 for r in rows)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["examples"] == {"train": 16, "valid": 4, "skipped": 0}
    assert len(manifest["base_model_sha256"]) == 64 and manifest["trainable_parameters"] == 4096
    # The adapter is the best one by validation loss, and mlx-lm itself loads it.
    from mlx_lm.utils import load

    model, _ = load(str(tiny_model_dir), adapter_path=str(output))
    assert model(mx.array([[2, 4, 30]])).shape == (1, 3, TINY_CONFIG["vocab_size"])


def test_existing_run_needs_resume_or_overwrite(tiny_model_dir, tiny_data, tmp_path):
    output = tmp_path / "run"
    train(_config(tiny_model_dir, tiny_data, output, iters=2), log=lambda _: None)
    from mlx_bluey.train import TrainError

    with pytest.raises(TrainError, match="--resume to continue it or --overwrite"):
        train(_config(tiny_model_dir, tiny_data, output, iters=2), log=lambda _: None)
    with pytest.raises(TrainError, match=r"different config or data \(seed: 0 -> 5\)"):
        train(_config(tiny_model_dir, tiny_data, output, iters=2, seed=5), resume=True, log=lambda _: None)
    # how a step is computed may change on resume (same losses, tested above), what it computes may not
    logs = []
    train(_config(tiny_model_dir, tiny_data, output, iters=2, two_pass=True), resume=True, log=logs.append)
    assert any("already complete" in line for line in logs)


def test_a_checkpoint_from_before_a_neutral_key_existed_still_resumes(tiny_model_dir, tiny_data, tmp_path):
    """Runs made before `two_pass` or the preference keys existed (missing from state.json) resume, as
    `make train` does."""
    output = tmp_path / "run"
    train(_config(tiny_model_dir, tiny_data, output, iters=2), log=lambda _: None)
    for state_file in output.glob("checkpoints/*/state.json"):
        state = json.loads(state_file.read_text())
        state["run"]["config"].pop("two_pass", None)
        for key in ("method", "from_adapter", "dpo_beta", "dpo_nll", "simpo_beta", "simpo_gamma", "orpo_lambda"):
            state["run"]["config"].pop(key)  # keys added later: the run had their defaults
        state["run"].pop("from_adapter_sha256")
        state["run"]["config"]["grad_checkpoint"] = True
        state_file.write_text(json.dumps(state))
    logs = []
    train(_config(tiny_model_dir, tiny_data, output, iters=2), resume=True, log=logs.append)
    assert any("already complete" in line for line in logs)


def test_kill_9_then_resume_gives_the_uninterrupted_losses(tiny_model_dir, tiny_data, tmp_path):
    steps = 30
    straight = tmp_path / "straight"
    train(_config(tiny_model_dir, tiny_data, straight, iters=steps, lora_dropout=0.1), log=lambda _: None)

    killed = tmp_path / "killed"
    command = train_command(tiny_model_dir, tiny_data, killed, **TINY_TRAINING, iters=steps)
    config_file = tmp_path / "c.yaml"
    config_file.write_text("lora_dropout: 0.1\n")  # a config file under the flags, as a user resumes
    command += ["--config", str(config_file)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step_000004" / "state.json").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    done_before_kill = len(_losses(killed))
    assert done_before_kill < steps

    result = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stdout
    assert _losses(killed) == pytest.approx(_losses(straight), rel=1e-5)


def test_too_long_is_an_error_or_a_counted_skip(tiny_model_dir, tmp_path):
    from mlx_bluey.data import DataError

    rows = [chat("hi", "short")] * 4 + [chat("tell me everything", "word " * 60)]
    data = write_jsonl(tmp_path / "data" / "train.jsonl", rows).parent
    with pytest.raises(DataError, match=r"train\.jsonl:5:messages: \d+ tokens, over max_seq_length=100"):
        train(_config(tiny_model_dir, data, tmp_path / "a", iters=1, max_seq_length=100), log=lambda _: None)
    assert not (tmp_path / "a").exists()
    messages = []
    train(
        _config(tiny_model_dir, data, tmp_path / "b", iters=1, max_seq_length=100, on_too_long="skip"),
        log=messages.append,
    )
    assert any(m.startswith("skipped 1 train conversation(s) over max_seq_length") for m in messages)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["examples"]["skipped"] == 1


@pytest.mark.parametrize("kind", ["dora", "full"])
def test_dora_and_full_fine_tuning_train_and_load_in_mlx_lm(tiny_model_dir, tiny_data, tmp_path, kind):
    output = tmp_path / kind
    train(
        _config(tiny_model_dir, tiny_data, output, iters=4, fine_tune_type=kind, learning_rate=1e-3), log=lambda _: None
    )
    losses = _losses(output)
    assert losses[-1] < losses[0]
    from mlx_lm.utils import load

    model, _ = load(str(tiny_model_dir), adapter_path=str(output))
    assert model(mx.array([[2, 4, 30]])).shape == (1, 3, TINY_CONFIG["vocab_size"])


# Validation losses injected by step: the best is step 4, then two evaluations without a new best.
VAL_LOSSES = {1: 3.0, 2: 2.0, 3: 2.5, 4: 1.5, 5: 1.6, 6: 1.7, 7: 1.0, 8: 0.5}


class AdapterAtEachStep(TrainingCallback):
    """The bytes of adapters.safetensors after each step (RunFiles, called first, has written it by then)."""

    def __init__(self, output):
        self.output, self.by_step = output, {}

    def on_step(self, row):
        self.by_step[row["step"]] = (self.output / "adapters.safetensors").read_bytes()


def test_early_stopping_keeps_the_best_adapter(tiny_model_dir, tiny_data, tmp_path):
    output = tmp_path / "run"
    seen = AdapterAtEachStep(output)
    result = train(
        _config(tiny_model_dir, tiny_data, output, iters=8, val_every=1, early_stopping_patience=2),
        log=lambda _: None,
        callbacks=[seen],
        validation_loss=VAL_LOSSES.__getitem__,
    )
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val_loss"]) for r in rows] == [(s, VAL_LOSSES[s]) for s in range(1, 7)]
    assert (result["best_step"], result["best_val_loss"], result["evals_since_best"]) == (4, 1.5, 2)
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step_000004", "step_000006"]
    assert (output / "adapters.safetensors").read_bytes() == seen.by_step[4] != seen.by_step[3]
    assert seen.by_step[6] == seen.by_step[4]  # steps 5 and 6 were no improvement: not saved


def test_the_validation_loss_is_the_held_out_mean_loss_of_the_saved_adapter(tiny_model_dir, tiny_data, tmp_path):
    output = tmp_path / "run"
    result = train(_config(tiny_model_dir, tiny_data, output, iters=6, val_every=2), log=lambda _: None)
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    best = min((r for r in rows if "val_loss" in r), key=lambda r: r["val_loss"])
    assert result["best_step"] == best["step"]
    from mlx_lm.tuner.utils import load_adapters

    from mlx_bluey.data import encode_dataset, read_jsonl
    from mlx_bluey.train import evaluate_loss

    model, tokenizer, _ = load_base(tiny_model_dir, "float32")
    load_adapters(model, str(output))
    valid = encode_dataset(read_jsonl(tiny_data / "valid.jsonl"), tokenizer, 1024)
    assert evaluate_loss(model, valid, 4) == pytest.approx(best["val_loss"], rel=1e-5)


def test_a_run_that_cannot_work_fails_before_it_writes(tiny_model_dir, tiny_data, tmp_path):
    from mlx_bluey.train import TrainError

    output = tmp_path / "run"
    with pytest.raises(TrainError, match="two_pass needs the NumPy head"):
        train(_config(tiny_model_dir, tiny_data, output, fine_tune_type="full", two_pass=True), log=lambda _: None)
    assert not output.exists()


def test_ctrl_c_handling_is_given_back_when_training_raises(tiny_model_dir, tiny_data, tmp_path):
    def broken(step):
        raise RuntimeError("validation failed")

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError, match="validation failed"):
        train(
            _config(tiny_model_dir, tiny_data, tmp_path / "run", val_every=1),
            log=lambda _: None,
            validation_loss=broken,
        )
    assert signal.getsignal(signal.SIGINT) is before


def test_two_pass_step_gives_the_one_pass_loss_and_gradients(tiny_model_dir):
    model = model_with_live_adapters(tiny_model_dir, lora_dropout=0.0)
    rng = np.random.default_rng(1)
    inputs = mx.array(rng.integers(7, 100, (2, 13)).astype(np.int32))
    targets = mx.array(rng.integers(7, 100, (2, 13)).astype(np.int32))
    positions = mx.array([3, 4, 5, 6, 15, 16, 25])
    one_loss, one_grads = nn.value_and_grad(model, make_loss(model, head_trainable=False))(
        model, inputs, targets, positions
    )
    two_loss, two_grads = make_two_pass_step(model)(model, inputs, targets, positions)
    assert two_loss.item() == pytest.approx(one_loss.item(), rel=1e-6)
    flat_one, flat_two = tree_flatten(one_grads), tree_flatten(two_grads)
    assert [n for n, _ in flat_one] == [n for n, _ in flat_two] and len(flat_one) == 2 * 7 * 2  # lora_a, lora_b
    for (name, a), (_, b) in zip(flat_one, flat_two):
        assert mx.abs(a - b).max().item() <= 1e-5 * mx.abs(a).max().item(), name


def test_a_micro_batch_run_in_parts_gives_its_loss_and_gradients(tiny_model_dir, tiny_data):
    from transformers import AutoTokenizer

    from mlx_bluey.data import budget_parts, encode_dataset, read_jsonl
    from mlx_bluey.trainer import SupervisedObjective

    model = model_with_live_adapters(tiny_model_dir, lora_dropout=0.0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    dataset = encode_dataset(read_jsonl(tiny_data / "train.jsonl"), tokenizer, 1024)
    indices = [0, 1, 2, 5]
    value_and_grad = nn.value_and_grad(model, make_loss(model, head_trainable=False))
    whole = SupervisedObjective(value_and_grad, dataset)(model, indices)
    longest = max(len(dataset.ids[i]) for i in indices)
    assert len(budget_parts(dataset, indices, 2 * longest)) == 2
    parted = SupervisedObjective(value_and_grad, dataset, max_tokens=2 * longest)(model, indices)
    assert (parted.trained_tokens, parted.input_tokens) == (whole.trained_tokens, whole.input_tokens)
    assert parted.loss_sum == pytest.approx(whole.loss_sum, rel=1e-5)
    for (name, a), (_, b) in zip(tree_flatten(whole.grads), tree_flatten(parted.grads)):
        assert mx.abs(a - b).max().item() <= 1e-4 * mx.abs(a).max().item(), name


def test_two_pass_step_draws_the_same_dropout_masks_in_both_passes(tiny_model_dir):
    """With dropout the gradient must belong to the forward that gave the loss: the one-pass step run
    with the seed the two-pass step draws gives the same loss and gradients."""
    model = model_with_live_adapters(tiny_model_dir, lora_dropout=0.3)
    model.train()
    rng = np.random.default_rng(2)
    inputs = mx.array(rng.integers(7, 100, (2, 9)).astype(np.int32))
    targets = mx.array(rng.integers(7, 100, (2, 9)).astype(np.int32))
    positions = mx.array([2, 3, 4, 11, 12, 13])
    mx.random.seed(7)
    mx.random.seed(int(mx.random.randint(0, 2**31 - 1, ()).item()))  # what the two-pass step does first
    want_loss, want_grads = nn.value_and_grad(model, make_loss(model, head_trainable=False))(
        model, inputs, targets, positions
    )
    mx.random.seed(7)
    got_loss, got_grads = make_two_pass_step(model)(model, inputs, targets, positions)
    assert got_loss.item() == pytest.approx(want_loss.item(), rel=1e-6)
    mx.random.seed(8)
    other_loss, _ = make_two_pass_step(model)(model, inputs, targets, positions)
    assert other_loss.item() != pytest.approx(want_loss.item(), rel=1e-6)  # dropout is really on
    for (name, a), (_, b) in zip(tree_flatten(want_grads), tree_flatten(got_grads)):
        assert mx.abs(a - b).max().item() <= 1e-5 * mx.abs(a).max().item(), name


def test_gradient_checkpointing_gives_the_same_losses(tiny_model_dir, tiny_data, tmp_path):
    plain = tmp_path / "plain"
    train(_config(tiny_model_dir, tiny_data, plain, iters=3), log=lambda _: None)
    # mlx-lm's grad_checkpoint patches the block class for the whole process: run it in its own.
    checkpointed = tmp_path / "checkpointed"
    command = train_command(tiny_model_dir, tiny_data, checkpointed, **TINY_TRAINING, iters=3, grad_checkpoint=True)
    subprocess.run(command, check=True, capture_output=True)
    assert _losses(checkpointed) == pytest.approx(_losses(plain), rel=1e-5)


def test_ctrl_c_finishes_the_step_checkpoints_and_says_how_to_resume(tiny_model_dir, tiny_data, tmp_path):
    output = tmp_path / "run"
    options = dict(iters=500, batch_size=4, grad_accumulation=1, save_every=1000, val_every=0)
    command = train_command(tiny_model_dir, tiny_data, output, **options)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (output / "metrics.jsonl").exists() or len(_losses(output)) < 3:
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    done = len(_losses(output))
    assert f"interrupted after step {done}, checkpoint saved: run again with --resume" in stderr
    assert (output / "checkpoints" / f"step_{done:06d}" / "state.json").exists()


def test_resuming_a_finished_or_early_stopped_run_changes_nothing(tiny_model_dir, tiny_data, tmp_path):
    output = tmp_path / "run"
    config = _config(tiny_model_dir, tiny_data, output, iters=8, val_every=1, early_stopping_patience=2)
    train(config, log=lambda _: None, validation_loss=VAL_LOSSES.__getitem__)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in output.rglob("*") if p.is_file()}
    messages = []
    train(config, resume=True, log=messages.append, validation_loss=VAL_LOSSES.__getitem__)
    assert any(m.startswith("training already complete (step 6)") for m in messages)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in output.rglob("*") if p.is_file()} == before


def test_a_fractional_epoch_runs_the_first_steps_of_the_full_epochs_plan():
    from mlx_bluey.data import EncodedDataset
    from mlx_bluey.train import plan_run

    # 1460 conversations, 1 a micro-batch, 4 a step: 365 steps an epoch; 0.82 x 365 = 299.3 -> 300 steps
    dataset = EncodedDataset([np.arange(1, 5 + i % 7, dtype=np.int32) for i in range(1460)], [], [])
    whole = plan_run(dataset, TrainConfig(epochs=1, batch_size=1, grad_accumulation=4))
    part = plan_run(dataset, TrainConfig(epochs=0.82, batch_size=1, grad_accumulation=4))
    assert (whole.steps, part.steps, part.steps_per_epoch) == (365, 300, 365)
    assert part.micro_batches == whole.micro_batches[:1200]  # the same batches as iters: 300
    assert part.micro_batches == plan_run(dataset, TrainConfig(iters=300, batch_size=1)).micro_batches
    # rounded before the ceiling: 0.14 x 50 is 7.000000000000001 in floats, 7 steps (200 conversations, 50 steps)
    assert plan_run(EncodedDataset([np.ones(3, np.int32)] * 200, [], []), TrainConfig(epochs=0.14)).steps == 7
