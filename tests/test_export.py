"""Fuse -> export on the tiny model: the Transformers.js layout, the report, parity, and the transformers load.

The export worker runs in .venv-export (built by `make test`); these tests drive it the way users do,
through `mlx_bluey export`, and read what it wrote.
"""

import json
import subprocess
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_tiny_tokenizer, run_cli

from mlx_bluey.chat_format import CHAT_TEMPLATE
from mlx_bluey.export import export_python
from mlx_bluey.export_args import DEFAULT_VARIANTS, ExportArgs
from mlx_bluey.generation import load_for_generation
from mlx_bluey.parity import template_ids

# int8 (per output column, folded to fp32 at load) on the random tiny model, 170 positions: measured top-1 0.988,
# KL 0.0029 (q8 there: 0.977, 0.0051). The weights are rounded to nearest, the same on every machine; the bounds
# leave ~7x room for another CPU kernel's arithmetic, as q8's do.
INT8_TOP1, INT8_KL = 0.9, 0.02
FOLD = {"session.disable_quant_qdq": "1"}


def test_export_writes_the_transformers_js_layout(tiny_export):
    names = {str(p.relative_to(tiny_export)) for p in tiny_export.rglob("*")}
    assert {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "character.json",
        "export.json",
        "export.md",
        "onnx/model_int8.onnx",
        "onnx/model_vocab_int8.onnx",
        "onnx/model_quantized.onnx",
        "onnx/model_q4.onnx",
        "onnx/model_fp16.onnx",
        "onnx/model.onnx",
    } <= names
    assert not any(part.startswith(".") for name in names for part in Path(name).parts)  # no work directory left
    assert json.loads((tiny_export / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    assert json.loads((tiny_export / "generation_config.json").read_text())["eos_token_id"] == [1, 5]
    assert json.loads((tiny_export / "character.json").read_text())["name"] == "Bluey"


def test_export_report_sizes_and_parity(tiny_export):
    report = json.loads((tiny_export / "export.json").read_text())
    by_name = {v["variant"]: v for v in report["variants"]}
    assert list(by_name) == ["int8", "int8-vocab", "q8", "q4", "fp16", "fp32"]
    for entry in by_name.values():
        assert entry["bytes"] == (tiny_export / entry["file"]).stat().st_size
        parity = entry["parity"]
        assert parity["positions"] > 20 and 0 <= parity["top1_agreement"] <= 1 and parity["kl_mean"] >= 0
        assert len(parity["greedy_identical_prefix_tokens"]) == 2 and parity["ort_decode_tokens_per_s"] > 0
    # fp32 ONNX computes what transformers computes on the fused directory
    assert by_name["fp32"]["parity"]["top1_agreement"] == 1.0 and by_name["fp32"]["parity"]["kl_mean"] < 1e-6
    assert by_name["fp32"]["parity"]["greedy_identical_share"] == 1.0
    assert by_name["fp16"]["parity"]["kl_mean"] < 1e-3
    # the quantized variants stay near the fused model, 8 bits nearer than 4. Measured on this random tiny model
    # (170 positions): q8 top-1 0.977, KL 0.0051; q4 top-1 0.788, KL 0.33. The weights are rounded to nearest
    # (the same on every machine); the bounds leave 3-6x room for another CPU kernel's arithmetic.
    q8, q4 = by_name["q8"]["parity"], by_name["q4"]["parity"]
    assert q8["top1_agreement"] >= 0.9 and q8["kl_mean"] < 0.03
    assert q4["top1_agreement"] >= 0.6 and q4["kl_mean"] < 1.5
    assert q8["kl_mean"] < q4["kl_mean"]
    # the tied embedding is stored once in every variant: the tiny model's 102 x 32 table is 13,056 bytes in fp32
    assert all(v["tied_bytes_saved"] == 102 * 32 * 4 for k, v in by_name.items() if k != "fp16")
    assert by_name["fp16"]["tied_bytes_saved"] == 102 * 32 * 4  # tied before the fp16 conversion
    assert by_name["q4"]["bytes"] < by_name["q8"]["bytes"] < by_name["fp32"]["bytes"]
    # int8: one byte per weight (+ a scale per column) in the file; parity measured with the session option
    # that folds it back to fp32 at load, the one export.json hands the page
    assert by_name["int8"]["session_config"] == by_name["int8-vocab"]["session_config"] == FOLD
    assert all("session_config" not in v for k, v in by_name.items() if not k.startswith("int8"))
    assert by_name["int8"]["bytes"] < by_name["fp16"]["bytes"] < by_name["fp32"]["bytes"]
    int8 = by_name["int8"]["parity"]
    assert int8["top1_agreement"] >= INT8_TOP1 and int8["kl_mean"] < INT8_KL
    assert "| q8 | onnx/model_quantized.onnx |" in (tiny_export / "export.md").read_text()


def test_the_vocabulary_variant_keeps_the_training_datas_ids_and_reports_what_the_cut_costs(tiny_export, tiny_fused):
    report = json.loads((tiny_export / "export.json").read_text())
    by_name = {v["variant"]: v for v in report["variants"]}
    vocab = by_name["int8-vocab"]
    # kept: every id of the chat template's rendering of the training conversations, the stop ids [1, 5], and
    # the other spellings of the data's words (Capitalised "Dad" -> "dad", ...; the rule's own test is in
    # tests/export_env): fewer than the tiny vocabulary's 102
    tokenizer = make_tiny_tokenizer()
    rendered = {1, 5}
    for line in (tiny_fused.parent / "data" / "train.jsonl").read_text().splitlines():
        rendered.update(template_ids(tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=True)))
    assert len(rendered) < vocab["kept_ids"] < 102
    assert (vocab["dtype"], vocab["model_file_name"], vocab["file"]) == (
        "int8",
        "model_vocab",
        "onnx/model_vocab_int8.onnx",
    )
    assert all((v["dtype"], v["model_file_name"]) == (k, "model") for k, v in by_name.items() if k != "int8-vocab")
    # the int8 table stays whole for the lookup: the file is the int8 one plus the kept ids (8 bytes each)
    assert 0 < vocab["bytes"] - by_name["int8"]["bytes"] < 2_000
    parity, int8 = vocab["parity"], by_name["int8"]["parity"]
    # every position whose reference top-1 was cut is a disagreement; the reference put some mass on cut ids.
    # Measured on the tiny model (44 ids kept, 1,290 bytes more than int8): top-1 0.988, KL 0.0028, top1_cut 0,
    # cut_mass 0.115; the bounds are int8's
    assert 0 <= parity["top1_cut"] <= 1 - parity["top1_agreement"] and parity["cut_mass"] > 0
    assert parity["top1_agreement"] >= INT8_TOP1 - parity["top1_cut"] and parity["kl_mean"] < INT8_KL
    assert "top1_cut" not in int8
    assert f"int8-vocab keeps {vocab['kept_ids']} token ids" in (tiny_export / "export.md").read_text()


def test_fused_directory_loads_in_transformers_like_mlx(tiny_fused, tmp_path):
    """The transformers load of the fused directory (export environment, PyTorch fp32) matches MLX."""
    ids = [2, 4, 30, 31, 32, 6, 50, 60, 70, 5, 6]
    model, _, _ = load_for_generation(str(tiny_fused), None, log=lambda _: None)
    want = np.array(model(mx.array([ids]))[0])
    script = (
        "import sys, numpy, torch; from transformers import AutoModelForCausalLM; "
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32).eval(); "
        "ids = torch.tensor([[int(i) for i in sys.argv[3].split(',')]]); "
        "numpy.save(sys.argv[2], m(ids).logits[0].detach().numpy())"
    )
    out = tmp_path / "logits.npy"
    result = subprocess.run(
        [str(export_python()), "-c", script, str(tiny_fused), str(out), ",".join(map(str, ids))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(out)
    assert got.shape == want.shape == (len(ids), 102)
    # float32 both sides, but mlx-lm scales the embedding by sqrt(hidden) rounded to bfloat16 (sqrt(32) = 5.657
    # -> 5.656, 1.5e-4 relative) where transformers keeps it in float32: measured 1.2e-3 at logits of ~2.
    assert np.abs(got - want).max() < 3e-3
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_export_refuses_a_directory_without_a_model(tmp_path):
    result = run_cli("export", str(tmp_path), "--output", str(tmp_path / "out"))
    assert result.returncode != 0 and "no config.json" in result.stderr
    assert not (tmp_path / "out").exists()


def test_failed_export_keeps_the_previous_one(tiny_fused, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "export.json").write_text("{}")
    result = run_cli("export", str(tiny_fused), "--output", str(out), "--variants", "q8,q3")
    assert result.returncode != 0 and "unknown variant 'q3'" in result.stderr
    assert [p.name for p in out.iterdir()] == ["export.json"]
    # the vocabulary variant needs the data whose ids it keeps, and that data must exist
    result = run_cli("export", str(tiny_fused), "--output", str(out), "--variants", "int8-vocab")
    assert result.returncode != 0 and "int8-vocab needs --vocabulary-data" in result.stderr
    missing = tmp_path / "train.jsonl"
    result = run_cli("export", str(tiny_fused), "--output", str(out), "--vocabulary-data", str(missing))
    assert result.returncode != 0 and f"{missing}: no such file (--vocabulary-data)" in result.stderr
    assert [p.name for p in out.iterdir()] == ["export.json"]


def test_export_args_travel_to_the_worker_as_json(tmp_path):
    args = ExportArgs(
        tmp_path / "fused",
        tmp_path / "out",
        "onnx",
        ("q8", "fp16"),
        parity_data=tmp_path / "t.jsonl",
        parity_texts=3,
        vocabulary_data=tmp_path / "train.jsonl",
        vocabulary_common=100,
        keep_fp32=True,
    )
    assert ExportArgs.from_json(args.to_json()) == args
    assert ExportArgs(tmp_path, tmp_path).chosen_variants() == DEFAULT_VARIANTS["onnx"]
    # with vocabulary data the default adds the variant whose head keeps that data's token ids
    with_data = ExportArgs(tmp_path, tmp_path, vocabulary_data=tmp_path / "train.jsonl")
    assert with_data.chosen_variants() == (*DEFAULT_VARIANTS["onnx"], "int8-vocab")
    with pytest.raises(ValueError, match=r"unknown export arguments \['colour'\]"):
        ExportArgs.from_json('{"source": "a", "output": "b", "colour": "blue"}')
