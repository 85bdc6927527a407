"""head_ids: data, the training softmax over the ids the training conversations use (head_loss.cut_ids), and
head_ids: sampled, those and a per-micro-batch draw of the others (head_loss.Tail)."""

import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import chat, tiny_train_config, write_jsonl

from mlx_bluey.config import ConfigError
from mlx_bluey.head_loss import Tail, head_weight, make_numpy_head_loss, mlx_cut_head_loss
from mlx_bluey.train import train
from mlx_bluey.tuning import load_base

QUIET = {"log": lambda _: None}


def test_the_cut_head_is_cross_entropy_over_the_kept_rows_in_numpy_and_in_mlx(tiny_model_dir):
    model, _, _ = load_base(tiny_model_dir, "float32")
    weight = np.array(head_weight(model))  # [102, 32]
    ids = np.array([1, 5, 7, 20, 42, 99])
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 32)).astype(np.float32)
    targets = np.array([42, 7, 99])
    # by hand: logits over the 6 kept rows, log-sum-exp minus the target's logit, summed over the 3 rows
    logits = hidden.astype(np.float64) @ weight[ids].T.astype(np.float64)
    peak = logits.max(axis=1)
    by_hand = (peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1)) - logits[np.arange(3), [4, 2, 5]]).sum()
    numpy_loss = make_numpy_head_loss(model, ids)
    mlx_loss = mlx_cut_head_loss(model, ids)
    h, t = mx.array(hidden), mx.array(targets.astype(np.int32))
    assert float(numpy_loss(model, h, t)) == pytest.approx(by_hand, rel=1e-5)
    assert float(mlx_loss(model, h, t)) == pytest.approx(by_hand, rel=1e-5)
    # fewer competitors: never above the loss over all 102 ids
    full = hidden.astype(np.float64) @ weight.T.astype(np.float64)
    full_loss = (np.log(np.exp(full).sum(axis=1)) - full[np.arange(3), targets]).sum()
    assert by_hand < full_loss
    # the NumPy head's gradient w.r.t. the hidden states is MLX's
    grad_numpy = mx.grad(lambda x: numpy_loss(model, x, t))(h)
    grad_mlx = mx.grad(lambda x: mlx_loss(model, x, t))(h)
    np.testing.assert_allclose(np.array(grad_numpy), np.array(grad_mlx), rtol=0, atol=1e-5)


def test_training_with_head_ids_data_records_the_kept_ids_and_validates_over_all(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", [chat(f"hi {i}", "Hooray! Bingo!") for i in range(8)])
    write_jsonl(data / "valid.jsonl", [chat("hi 9", "Hooray! Bingo!")])
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(tiny_train_config(tiny_model_dir, data, full, iters=3), **QUIET)
    train(tiny_train_config(tiny_model_dir, data, cut, iters=3, head_ids="data"), **QUIET)
    kept = json.loads((cut / "manifest.json").read_text())["head_ids"]
    assert json.loads((full / "manifest.json").read_text())["head_ids"] is None
    assert 0 < kept < 102  # the tiny tokenizer's characters in the chat template and these texts, and the specials
    rows = {
        name: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for name, run in (("full", full), ("cut", cut))
    }
    # step 1 starts from the same weights on the same batch: the cut softmax's loss is lower
    assert rows["cut"][0]["train_loss"] < rows["full"][0]["train_loss"]
    assert all("val_loss" not in r or r["val_loss"] > 0 for r in rows["cut"])
    # the two-pass step (two_pass) takes the same cut head: the same first loss
    two_pass = tmp_path / "two_pass"
    train(tiny_train_config(tiny_model_dir, data, two_pass, iters=1, head_ids="data", two_pass=True), **QUIET)
    first = json.loads((two_pass / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train_loss"] == pytest.approx(rows["cut"][0]["train_loss"], rel=1e-5)
    with pytest.raises(ConfigError, match="head_ids: data is for method sft with a frozen head"):
        tiny_train_config(tiny_model_dir, data, cut, head_ids="data", method="orpo")


def test_the_sampled_tail_is_the_kept_rows_and_the_drawn_ones_raised_by_log_tail_over_drawn(tiny_model_dir):
    model, _, _ = load_base(tiny_model_dir, "float32")
    weight = np.array(head_weight(model))  # [102, 32]
    ids = np.array([1, 5, 7, 20, 42, 99])
    tail = Tail.around(ids, 102, samples=10, seed=3)
    targets = np.array([42, 7, 99])
    drawn = tail.draw(targets)
    # 10 of the 96 ids left out, sorted, none kept; the same targets draw the same ids (a resumed run too)
    assert len(tail.ids) == 96 and len(drawn) == 10 and np.all(np.diff(drawn) > 0)
    assert not set(drawn) & set(ids) and np.array_equal(drawn, tail.draw(targets.copy()))
    assert not np.array_equal(drawn, tail.draw(np.array([42, 7, 1])))  # another micro-batch, another draw
    assert tail.correction == pytest.approx(np.log(96 / 10))
    hidden = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    # by hand: logits over the 6 kept rows, then the 10 drawn ones + log(9.6), log-sum-exp minus the target's logit
    logits = hidden.astype(np.float64) @ np.concatenate([weight[ids], weight[drawn]]).T.astype(np.float64)
    logits[:, 6:] += np.log(96 / 10)
    peak = logits.max(axis=1)
    by_hand = (peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1)) - logits[np.arange(3), [4, 2, 5]]).sum()
    numpy_loss, mlx_loss = make_numpy_head_loss(model, ids, tail), mlx_cut_head_loss(model, ids, tail)
    h, t = mx.array(hidden), mx.array(targets.astype(np.int32))
    assert float(numpy_loss(model, h, t)) == pytest.approx(by_hand, rel=1e-5)
    assert float(mlx_loss(model, h, t)) == pytest.approx(by_hand, rel=1e-5)
    grad_numpy = mx.grad(lambda x: numpy_loss(model, x, t))(h)
    grad_mlx = mx.grad(lambda x: mlx_loss(model, x, t))(h)
    np.testing.assert_allclose(np.array(grad_numpy), np.array(grad_mlx), rtol=0, atol=1e-5)
    # drawing every left-out id adds log(1) = 0: the whole-vocabulary softmax, rows in another order
    everything = Tail.around(ids, 102, samples=500)
    assert everything.samples == 96 and everything.correction == 0.0
    full = hidden.astype(np.float64) @ weight.T.astype(np.float64)
    full_loss = (np.log(np.exp(full).sum(axis=1)) - full[np.arange(3), targets]).sum()
    assert float(make_numpy_head_loss(model, ids, everything)(model, h, t)) == pytest.approx(full_loss, rel=1e-5)


def test_training_with_every_left_out_id_drawn_is_training_over_the_whole_vocabulary(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", [chat(f"hi {i}", "Hooray! Bingo!") for i in range(8)])
    write_jsonl(data / "valid.jsonl", [chat("hi 9", "Hooray! Bingo!")])
    runs = {
        "full": {},
        "sampled": dict(head_ids="sampled", head_tail_samples=102),
        "two_pass": dict(head_ids="sampled", head_tail_samples=102, two_pass=True),
    }
    losses = {}
    for name, options in runs.items():
        train(tiny_train_config(tiny_model_dir, data, tmp_path / name, iters=2, **options), **QUIET)
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["train_loss"] for r in rows]
    assert losses["sampled"] == pytest.approx(losses["full"], rel=1e-4)
    assert losses["two_pass"] == pytest.approx(losses["full"], rel=1e-4)
    assert json.loads((tmp_path / "sampled" / "manifest.json").read_text())["head_ids"] < 102
    with pytest.raises(ConfigError, match="head_tail_samples"):
        tiny_train_config(tiny_model_dir, data, tmp_path / "x", head_ids="sampled", head_tail_samples=0)
