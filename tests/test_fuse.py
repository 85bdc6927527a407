"""Fusing: the fused model computes what base + adapter computes, and the directory is complete."""

import json

import mlx.core as mx
import pytest
from conftest import TINY_CONFIG, chat, fuse_with_cli, tiny_train_config, write_jsonl

from mlx_bluey.chat_format import CHAT_TEMPLATE
from mlx_bluey.generation import load_for_generation
from mlx_bluey.train import train


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_fused_logits_match_base_plus_adapter(tmp_path, tiny_model_dir, kind):
    rows = [chat(f"q{i}", "Bingo and me played shops all arvo!") for i in range(8)]
    data = write_jsonl(tmp_path / "data" / "train.jsonl", rows).parent
    adapter = tmp_path / "adapter"
    config = tiny_train_config(tiny_model_dir, data, adapter, iters=5, learning_rate=5e-2, fine_tune_type=kind)
    train(config, log=lambda _: None)
    fused = tmp_path / "fused"
    result = fuse_with_cli(adapter, fused)
    assert result.returncode == 0, result.stderr
    assert "fused 14 adapter layers" in result.stdout  # 2 blocks x 7 linears

    tuned, _, _ = load_for_generation(None, str(adapter), log=lambda _: None)
    merged, _, _ = load_for_generation(str(fused), None, log=lambda _: None)
    base, _, _ = load_for_generation(str(tiny_model_dir), None, log=lambda _: None)
    ids = mx.array([[2, 4, 30, 31, 32, 6, 50, 60, 70]])
    want, got, before = tuned(ids), merged(ids), base(ids)
    assert mx.abs(want - before).max().item() > 1e-3  # the adapter really changes the output
    assert mx.abs(want - got).max().item() < 1e-4

    names = {p.name for p in fused.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= names
    assert json.loads((fused / "generation_config.json").read_text())["eos_token_id"] == [1, 5]
    assert json.loads((fused / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    config = json.loads((fused / "config.json").read_text())
    assert config["torch_dtype"] == "float32" and config["hidden_size"] == TINY_CONFIG["hidden_size"]
    assert not any(name.startswith(".") for name in names | {p.name for p in tmp_path.iterdir()})


def test_generation_config_holds_the_clis_sampling_defaults(tiny_fused):
    from mlx_bluey.generation_settings import GenerationSettings

    generation = json.loads((tiny_fused / "generation_config.json").read_text())
    d = GenerationSettings()
    assert {k: generation[k] for k in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")} == {
        "do_sample": True,
        "temperature": d.temperature,
        "top_p": d.top_p,
        "top_k": d.top_k,
        "repetition_penalty": d.repetition_penalty,
    }
    assert (generation["max_new_tokens"], generation["min_new_tokens"]) == (d.max_new_tokens, d.min_new_tokens)


def test_generation_config_suppresses_the_special_tokens(tiny_fused):
    generation = json.loads((tiny_fused / "generation_config.json").read_text())
    assert generation["suppress_tokens"] == [0, 2, 3, 4, 102]  # every special token but the stops 1 and 5
