"""Preference tuning's pieces: each loss against a hand computation, the pair file's errors, the reply
labels, and reply log-probabilities on the tiny model against a plain forward pass."""

import math

import mlx.core as mx
import pytest
from conftest import tiny_train_config, write_jsonl

from mlx_bluey.chat_format import encode_conversation
from mlx_bluey.data import DataError
from mlx_bluey.preference import dpo_loss, encode_reply, orpo_loss, read_pairs, reply_logprobs, simpo_loss

softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731 (-log sigma(m) = softplus(-m))


def test_dpo_loss_by_hand():
    chosen, rejected = mx.array([-10.0, -20.0]), mx.array([-12.0, -18.0])
    reference = mx.array([-11.0, -19.0])
    loss, figures = dpo_loss(chosen, rejected, reference, reference, beta=0.1)
    # pair 1: 0.1 * ((-10 + 11) - (-12 + 11)) = 0.2; pair 2: 0.1 * ((-20 + 19) - (-18 + 19)) = -0.2
    assert loss.item() == pytest.approx((softplus(-0.2) + softplus(0.2)) / 2, rel=1e-6)
    assert figures["margin"].item() == pytest.approx(0.0, abs=1e-6)
    assert figures["accuracy"].item() == 0.5
    assert figures["chosen_logprob"].item() == -15.0 and figures["rejected_logprob"].item() == -15.0
    # dpo_nll 0.5 adds half the chosen replies' mean per-token NLL: (10 / 5 + 20 / 4) / 2 = 3.5
    with_nll, _ = dpo_loss(chosen, rejected, reference, reference, 0.1, 0.5, mx.array([5.0, 4.0]))
    assert with_nll.item() == pytest.approx(loss.item() + 0.5 * 3.5, rel=1e-6)


def test_simpo_loss_by_hand():
    # 2 * (-10 / 10 - (-30 / 20)) - 0.5 = 2 * 0.5 - 0.5 = 0.5
    loss, figures = simpo_loss(mx.array([-10.0]), mx.array([-30.0]), mx.array([10.0]), mx.array([20.0]), 2.0, 0.5)
    assert loss.item() == pytest.approx(softplus(-0.5), rel=1e-6)
    assert figures["margin"].item() == pytest.approx(0.5, rel=1e-6) and figures["accuracy"].item() == 1.0
    # ranked right (reward gap 2 * (-1 + 1.1) = 0.2 > 0) but short of gamma 0.5: accurate, margin -0.3
    loss, figures = simpo_loss(mx.array([-10.0]), mx.array([-22.0]), mx.array([10.0]), mx.array([20.0]), 2.0, 0.5)
    assert figures["margin"].item() == pytest.approx(-0.3, rel=1e-5) and figures["accuracy"].item() == 1.0


def test_orpo_loss_by_hand():
    # per-token means -0.5 and -1.5; log odds = m - log(1 - e^m)
    odds = lambda m: m - math.log(1 - math.exp(m))  # noqa: E731
    loss, figures = orpo_loss(mx.array([-2.0]), mx.array([-6.0]), mx.array([4.0]), mx.array([4.0]), 0.1)
    expected = 0.5 + 0.1 * softplus(-(odds(-0.5) - odds(-1.5)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert figures["margin"].item() == pytest.approx(odds(-0.5) - odds(-1.5), rel=1e-6)


def test_pair_file_errors_name_line_and_field(tmp_path):
    good = {"messages": [{"role": "user", "content": "how old is Bingo?"}], "chosen": "Four!", "rejected": "Six."}
    pairs = read_pairs(write_jsonl(tmp_path / "ok.jsonl", [good, {**good, "reason": "base model", "source": "base"}]))
    assert [(p.chosen, p.rejected, p.reason, p.source, p.origin) for p in pairs] == [
        ("Four!", "Six.", "", f"{tmp_path / 'ok.jsonl'}:1", ""),
        ("Four!", "Six.", "base model", f"{tmp_path / 'ok.jsonl'}:2", "base"),
    ]
    cases = [
        ({k: v for k, v in good.items() if k != "chosen"}, ":2: missing field 'chosen'"),
        ({**good, "rejected": " "}, ":2:rejected: must be a non-empty string"),
        ({**good, "rejected": "Four!"}, ":2:rejected: is the same text as chosen"),
        ({**good, "reason": 3}, ":2:reason: must be a string"),
        ({**good, "source": ["base"]}, ":2:source: must be a string"),
        (
            {**good, "messages": [*good["messages"], {"role": "assistant", "content": "hi"}]},
            ":2:messages: must end on a user turn",
        ),
        ({**good, "messages": [{"role": "robot", "content": "x"}]}, ":2:messages[0].role: must be one of"),
    ]
    for row, message in cases:
        path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
        with pytest.raises(DataError) as error:
            read_pairs(path)
        assert str(error.value).startswith(f"{path}{message}"), str(error.value)


def test_only_the_final_reply_is_labelled(tiny_tokenizer):
    prompt = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "b"},
    ]
    encoded = encode_reply(tiny_tokenizer, prompt, "cd")
    whole = encode_conversation(tiny_tokenizer, [*prompt, {"role": "assistant", "content": "cd"}])
    assert encoded.ids == whole.ids and whole.n_supervised == 2 + 1 + 2 + 1  # "yo" <eot>, "cd" <eot>
    labelled = [tiny_tokenizer.convert_ids_to_tokens(i) for i, keep in zip(encoded.ids, encoded.labels) if keep]
    assert labelled == ["c", "d", "<end_of_turn>"]


def test_reply_logprobs_equal_a_plain_forward_pass(tiny_model_dir, tiny_tokenizer):
    from mlx_bluey.train import load_base

    model, _, _ = load_base(tiny_model_dir, "float32")
    prompt = [{"role": "user", "content": "hi"}]
    rows = [encode_reply(tiny_tokenizer, prompt, "a long reply"), encode_reply(tiny_tokenizer, prompt, "no")]
    sums, counts = reply_logprobs(model, rows)  # one batch, the short row padded
    for b, row in enumerate(rows):
        logits = model(mx.array([row.ids]))[0].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        expected = sum(logprobs[i - 1, row.ids[i]].item() for i, keep in enumerate(row.labels) if keep)
        assert counts[b].item() == sum(row.labels) == [13, 3][b]
        assert sums[b].item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# The preference stage end to end on the tiny model


@pytest.fixture()
def pair_data(tmp_path):
    def pair(i):
        prompt = [{"role": "user", "content": f"question {i}?"}]
        return {"messages": prompt, "chosen": "Heaps of fun with Bingo!", "rejected": f"As an AI model {i}, no."}

    write_jsonl(tmp_path / "pairs" / "train.jsonl", [pair(i) for i in range(8)])
    # the validation pairs name how their rejected reply was made (data pairs' "source")
    valid = [{**pair(8), "source": "fact"}, {**pair(9), "source": "template"}]
    write_jsonl(tmp_path / "pairs" / "valid.jsonl", valid)
    return tmp_path / "pairs"


def _config(tiny_model_dir, data, output, **kw):
    """test_train's tiny config, with batches of 2 pairs and no warm-up."""
    return tiny_train_config(tiny_model_dir, data, output, **{"batch_size": 2, "warmup_steps": 0, **kw})


def _rows(output):
    import json

    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["simpo", "orpo", "dpo"])
def test_preference_training_runs_on_the_loop_and_prefers_the_chosen(tiny_model_dir, pair_data, tmp_path, method):
    from mlx_bluey.train import train

    output = tmp_path / method
    train(_config(tiny_model_dir, pair_data, output, method=method, iters=12), log=lambda _: None)
    rows = _rows(output)
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6, 9, 12]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["margin"] > rows[0]["margin"] and rows[-1]["accuracy"] == 1.0
    # trained tokens: both replies of 2 pairs with their <end_of_turn>: 2 x (24 + 1) + two rejected
    assert all(r["trained_tokens"] > 2 * 25 for r in rows)
    assert (output / "reference_logprobs.json").exists() is (method == "dpo")
    # held out: the method's figures over both pairs and over each origin's one pair (batched apart)
    held_out = rows[-1]
    for name in ("accuracy", "margin"):
        by_origin = [held_out[f"val_{name}_fact"], held_out[f"val_{name}_template"]]
        assert held_out[f"val_{name}"] == pytest.approx(sum(by_origin) / 2, rel=1e-6)
    assert held_out["val_accuracy"] in (0.0, 0.5, 1.0) and "val_chosen_logprob" in held_out


def test_dpo_nll_adds_the_chosen_replies_per_token_nll_to_the_first_step(
    tiny_model_dir, tiny_tokenizer, pair_data, tmp_path
):
    """At step 1 the policy is its reference: every DPO margin is 0, the DPO loss log 2, and dpo_nll 0.5 adds
    half the chosen replies' mean per-token NLL (all chosen replies here are one text: one token count)."""
    from mlx_bluey.train import train

    output = tmp_path / "dpo-nll"
    train(_config(tiny_model_dir, pair_data, output, method="dpo", dpo_nll=0.5, iters=1), log=lambda _: None)
    first = _rows(output)[0]
    pair = read_pairs(pair_data / "train.jsonl")[0]
    tokens = sum(encode_reply(tiny_tokenizer, pair.messages, pair.chosen).labels)
    assert first["margin"] == pytest.approx(0.0, abs=1e-4)
    assert first["train_loss"] == pytest.approx(math.log(2) + 0.5 * -first["chosen_logprob"] / tokens, rel=1e-4)


def test_dpo_reference_is_the_starting_model_cached_and_reused(tiny_model_dir, tiny_tokenizer, pair_data, tmp_path):
    import json

    from mlx_bluey.preference import read_pairs
    from mlx_bluey.preference_train import encode_pairs, reference_logprobs
    from mlx_bluey.train import apply_adapters, load_base, train

    # an SFT-like starting adapter: a short SimPO run, then DPO from it
    start = tmp_path / "start"
    train(_config(tiny_model_dir, pair_data, start, method="simpo", iters=2, val_every=0), log=lambda _: None)
    output = tmp_path / "dpo"
    config = _config(tiny_model_dir, pair_data, output, method="dpo", iters=4, from_adapter=str(start))
    train(config, log=lambda _: None)
    cached = json.loads((output / "reference_logprobs.json").read_text())

    model, tokenizer, _ = load_base(tiny_model_dir, "float32")
    apply_adapters(model, config)
    model.load_weights(str(start / "adapters.safetensors"), strict=False)
    fresh = reference_logprobs(model, encode_pairs(read_pairs(pair_data / "train.jsonl"), tokenizer, 1024, "error"), 2)
    assert cached["logprobs"]["train"]["chosen"] == pytest.approx(fresh["chosen"], rel=1e-5)
    assert cached["logprobs"]["train"]["rejected"] == pytest.approx(fresh["rejected"], rel=1e-5)
    assert len(cached["logprobs"]["valid"]["chosen"]) == 2

    # a resumed run (here: a finished one, continued to 6 steps) reads the cache instead of the moved policy
    logs = []
    longer = _config(tiny_model_dir, pair_data, output, method="dpo", iters=6, from_adapter=str(start))
    with pytest.raises(Exception, match="different config"):
        train(longer, resume=True, log=logs.append)
    before = (output / "reference_logprobs.json").stat().st_mtime_ns
    train(longer, overwrite=True, log=logs.append)
    assert any("DPO reference" in line for line in logs) is False  # same data, same start: the cache served
    assert (output / "reference_logprobs.json").stat().st_mtime_ns >= before


def test_from_adapter_must_fit_the_config(tiny_model_dir, pair_data, tmp_path):
    from mlx_bluey.train import TrainError, train

    start = tmp_path / "start"
    train(_config(tiny_model_dir, pair_data, start, method="simpo", iters=1, val_every=0), log=lambda _: None)
    with pytest.raises(TrainError, match=r"adapter_config.json: lora_parameters.rank is 4, this run's config makes 8"):
        train(_config(tiny_model_dir, pair_data, tmp_path / "x", method="simpo", from_adapter=str(start), lora_rank=8))
    with pytest.raises(TrainError, match=r"adapter_config.json: not found"):
        train(_config(tiny_model_dir, pair_data, tmp_path / "y", method="simpo", from_adapter=str(tmp_path)))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # SFT reads chats: a pair file says what it lacks
    with pytest.raises(DataError, match=r"train.jsonl:1:messages: must end with an assistant message"):
        train(_config(tiny_model_dir, pair_data, tmp_path / "z"))


def test_dpo_resumed_from_a_checkpoint_gives_the_uninterrupted_losses(tiny_model_dir, pair_data, tmp_path):
    """As after a kill -9 between the step-4 and step-6 checkpoints: the resumed run must read the cached
    reference (the policy at step 4 has moved from it) and replay the same dropout."""
    import shutil

    from mlx_bluey.train import train

    config = dict(method="dpo", iters=6, lora_dropout=0.1, keep_checkpoints=3)
    straight = tmp_path / "straight"
    train(_config(tiny_model_dir, pair_data, straight, **config), log=lambda _: None)
    cut = tmp_path / "cut"
    shutil.copytree(straight, cut)
    shutil.rmtree(cut / "checkpoints" / "step_000006")
    logs = []
    train(_config(tiny_model_dir, pair_data, cut, **config), resume=True, log=logs.append)
    assert any("resuming from" in line and "step 4 of 6" in line for line in logs)
    assert not any("DPO reference" in line for line in logs)
    losses = lambda output: [r["train_loss"] for r in _rows(output)]  # noqa: E731
    assert len(losses(cut)) == 6 and losses(cut) == pytest.approx(losses(straight), rel=1e-5)


def test_score_pairs_script_counts_each_origin(tiny_model_dir, pair_data, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from mlx_bluey.generation import load_for_generation
    from mlx_bluey.preference import encode_reply, reply_logprobs
    from mlx_bluey.train import train

    adapter = tmp_path / "simpo"
    train(_config(tiny_model_dir, pair_data, adapter, method="simpo", iters=2), log=lambda _: None)
    script = Path(__file__).parent.parent / "scripts" / "score_pairs.py"
    out = tmp_path / "scored"
    command = [sys.executable, str(script), "--pairs", str(pair_data / "valid.jsonl"), "--adapter", str(adapter)]
    done = subprocess.run([*command, "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = json.loads((out / "pairs.json").read_text())["results"][str(adapter)]
    assert [(o, figures[o]["pairs"]) for o in figures] == [("fact", 1), ("all", 2), ("template", 1)]
    # the counts are the comparisons of the pairs' reply log-probabilities under the adapter
    model, tokenizer, _ = load_for_generation(None, str(adapter), log=lambda _: None)
    right = 0
    for pair in read_pairs(pair_data / "valid.jsonl"):
        sums, _ = reply_logprobs(
            model, [encode_reply(tokenizer, pair.messages, r) for r in (pair.chosen, pair.rejected)]
        )
        right += sums[0].item() > sums[1].item()
    assert figures["all"]["right_by_sum"] == right and figures["all"]["share_by_sum"] == right / 2
    assert (out / "pairs.md").read_text().startswith("# Held-out pairs ranked right")
