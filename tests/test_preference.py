"""Preference tuning's pieces: each loss against a hand computation, the pair file's errors, the reply
labels, and reply log-probabilities on the tiny model against a plain forward pass."""

import math

import mlx.core as mx
import pytest
from conftest import write_jsonl

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


def test_simpo_loss_by_hand():
    # 2 * (-10 / 10 - (-30 / 20)) - 0.5 = 2 * 0.5 - 0.5 = 0.5
    loss, figures = simpo_loss(mx.array([-10.0]), mx.array([-30.0]), mx.array([10.0]), mx.array([20.0]), 2.0, 0.5)
    assert loss.item() == pytest.approx(softplus(-0.5), rel=1e-6)
    assert figures["margin"].item() == pytest.approx(0.5, rel=1e-6) and figures["accuracy"].item() == 1.0


def test_orpo_loss_by_hand():
    # per-token means -0.5 and -1.5; log odds = m - log(1 - e^m)
    odds = lambda m: m - math.log(1 - math.exp(m))  # noqa: E731
    loss, figures = orpo_loss(mx.array([-2.0]), mx.array([-6.0]), mx.array([4.0]), mx.array([4.0]), 0.1)
    expected = 0.5 + 0.1 * softplus(-(odds(-0.5) - odds(-1.5)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert figures["margin"].item() == pytest.approx(odds(-0.5) - odds(-1.5), rel=1e-6)


def test_pair_file_errors_name_line_and_field(tmp_path):
    good = {"messages": [{"role": "user", "content": "how old is Bingo?"}], "chosen": "Four!", "rejected": "Six."}
    pairs = read_pairs(write_jsonl(tmp_path / "ok.jsonl", [good, {**good, "reason": "base model"}]))
    assert [(p.chosen, p.rejected, p.reason, p.source) for p in pairs] == [
        ("Four!", "Six.", "", f"{tmp_path / 'ok.jsonl'}:1"),
        ("Four!", "Six.", "base model", f"{tmp_path / 'ok.jsonl'}:2"),
    ]
    cases = [
        ({k: v for k, v in good.items() if k != "chosen"}, ":2: missing field 'chosen'"),
        ({**good, "rejected": " "}, ":2:rejected: must be a non-empty string"),
        ({**good, "rejected": "Four!"}, ":2:rejected: is the same text as chosen"),
        ({**good, "reason": 3}, ":2:reason: must be a string"),
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
