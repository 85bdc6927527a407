"""`mlx_bluey export --format peft`: PEFT's names and shapes by hand, and the adapter loaded by PEFT on
the Hugging Face base (export environment, PyTorch) gives MLX's base + adapter logits."""

import json
import subprocess

import mlx.core as mx
import numpy as np
import pytest
from conftest import run_cli

from mlx_bluey.export import export_python
from mlx_bluey.peft_export import PeftExportError, export_peft, peft_tensors


def test_names_and_transposes_by_hand():
    a, b = mx.zeros((32, 4)), mx.ones((4, 16))  # mlx-lm: lora_a in x r, lora_b r x out
    tensors, layers, modules = peft_tensors(
        {"model.layers.1.self_attn.q_proj.lora_a": a, "model.layers.1.self_attn.q_proj.lora_b": b}
    )
    assert {k: v.shape for k, v in tensors.items()} == {
        "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight": (4, 32),  # PEFT: r x in
        "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight": (16, 4),  # out x r
    }
    assert (layers, modules) == ([1], ["q_proj"])
    with pytest.raises(PeftExportError, match="m.magnitude: not a LoRA weight"):
        peft_tensors({"m.magnitude": a})


def test_peft_adapter_gives_mlx_logits_in_transformers(tiny_model_dir, tiny_fused, tmp_path):
    from mlx_lm.utils import load

    adapter = tiny_fused.parent / "adapter"  # the fixture's trained tiny adapter
    out = export_peft(adapter, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["layers_to_transform"]) == (8, 160.0, None)
    assert config["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]

    ids = [2, 4, 30, 31, 32, 6, 50, 60, 70, 5, 6]
    model, _ = load(str(tiny_model_dir), adapter_path=str(adapter))
    want = np.array(model(mx.array([ids]))[0].astype(mx.float32))
    script = (
        "import sys, numpy, torch; from transformers import AutoModelForCausalLM; from peft import PeftModel; "
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32); "
        "m = PeftModel.from_pretrained(m, sys.argv[2]).eval(); "
        "ids = torch.tensor([[int(i) for i in sys.argv[4].split(',')]]); "
        "numpy.save(sys.argv[3], m(ids).logits[0].detach().numpy())"
    )
    logits = tmp_path / "logits.npy"
    result = subprocess.run(
        [str(export_python()), "-c", script, str(tiny_model_dir), str(out), str(logits), ",".join(map(str, ids))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(logits)
    # the adapter moves the logits by far more than the two frameworks differ (the embedding scale, 1.2e-3
    # in test_export.py), so equal logits here mean the PEFT adapter is the MLX one
    base, _ = load(str(tiny_model_dir))
    moved = np.abs(np.array(base(mx.array([ids]))[0]) - want).max()
    assert moved > 0.5 and np.abs(got - want).max() < 3e-3
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_peft_export_refuses_what_is_not_a_lora_adapter(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"fine_tune_type": "dora", "lora_parameters": {}}))
    (tmp_path / "adapters.safetensors").write_bytes(b"")
    result = run_cli("export", str(tmp_path), "--format", "peft", "--output", "x")
    assert result.returncode == 1 and "fine_tune_type 'dora': only LoRA has a PEFT form" in result.stderr
