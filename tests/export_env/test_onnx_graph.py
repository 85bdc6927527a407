"""The tied-embedding rewrites of export_env/onnx_graph.py, on a hand-made decoder stub (runs in .venv-export).

The stub is the part of a decoder the rewrite touches: input_ids -> Gather(E [V, H]) -> hidden -> MatMul(E^T)
-> logits. onnxruntime runs every graph; NumPy gives the expected numbers.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

from mlx_bluey.export_env.onnx_graph import (
    FOLD_AT_LOAD,
    dequantize_at_load,
    dequantized_rows,
    find_tied,
    tie_float,
    tie_nbits,
)
from mlx_bluey.export_env.onnx_vocab import prune_vocabulary, vocabulary_ids

V = 50  # vocabulary


def stub(hidden: int, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    table = np.random.default_rng(seed).normal(size=(V, hidden)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["hidden"], name="embed_lookup"),
        helper.make_node("MatMul", ["hidden", "head"], ["logits"], name="lm_head"),
    ]
    graph = helper.make_graph(
        nodes,
        "stub",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", V]),
            helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["b", "s", hidden]),
        ],
        [numpy_helper.from_array(table, "embed"), numpy_helper.from_array(table.T.copy(), "head")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    return model, table


def run(model: onnx.ModelProto, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, hidden = session.run(["logits", "hidden"], {"input_ids": ids})
    return logits, hidden


def quantized(model: onnx.ModelProto, bits: int, block: int) -> onnx.ModelProto:
    config = DefaultWeightOnlyQuantConfig(
        block_size=block, is_symmetric=True, bits=bits, op_types_to_quantize=("MatMul",)
    )
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    return quantizer.model.model


IDS = np.array([[3, 0, 49, 7], [12, 12, 1, 30]], dtype=np.int64)


def test_find_tied_names_the_lookup_and_the_head():
    model, _ = stub(64)
    tied = find_tied(model)
    assert (tied.gather.name, tied.head.name, tied.table) == ("embed_lookup", "lm_head", "embed")


def test_tie_float_gives_identical_outputs_with_one_copy():
    model, table = stub(64)
    want_logits, want_hidden = run(model, IDS)
    saved = tie_float(model)
    assert saved == V * 64 * 4  # the [50, 64] float32 table: 12,800 bytes
    assert [i.name for i in model.graph.initializer] == ["head"]
    logits, hidden = run(model, IDS)
    np.testing.assert_array_equal(hidden, table[IDS])  # a gather of columns + transpose moves values exactly
    np.testing.assert_array_equal(hidden, want_hidden)
    np.testing.assert_allclose(logits, want_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bits,block,hidden", [(8, 32, 64), (4, 32, 64), (8, 32, 40), (4, 16, 40)])
def test_tie_nbits_reads_the_heads_quantized_rows(bits, block, hidden):
    model, table = stub(hidden, seed=bits + hidden)
    model = quantized(model, bits, block)
    before_logits, _ = run(model, IDS)  # MatMulNBits head, float32 lookup
    saved = tie_nbits(model)
    assert saved == V * hidden * 4
    float_tables = [
        i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and list(i.dims) == [V, hidden]
    ]
    assert float_tables == []
    blocks = -(-hidden // block)  # 40 -> 2 or 3 blocks, padded
    packed = next(i for i in model.graph.initializer if i.data_type == TensorProto.UINT8 and i.dims[0] == V)
    assert list(packed.dims) == [V, blocks, block * bits // 8]

    logits, rows = run(model, IDS)
    # the ONNX lookup computes exactly what the NumPy decoding of the head's weight computes
    np.testing.assert_array_equal(rows.reshape(-1, hidden), dequantized_rows(model, IDS.reshape(-1).tolist()))
    # ... and that decoding is the weight MatMulNBits multiplies by: logits = rows @ all_rows^T
    every_row = dequantized_rows(model, list(range(V)))
    np.testing.assert_allclose(logits, rows @ every_row.T, rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits, before_logits - (table[IDS] - rows) @ every_row.T, rtol=0, atol=1e-4)
    # symmetric block quantization, value = (q - 2^(bits-1)) x scale: rounding is off by half a step at most,
    # and the block's largest magnitude, clipped at the top of the range, by one step at most.
    scale = np.abs(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name.endswith("_scales"))))
    scale = scale.reshape(V, blocks, 1)
    error = np.abs(np.pad(table - every_row, ((0, 0), (0, blocks * block - hidden))).reshape(V, blocks, block))
    assert (error <= scale + 1e-6).all()
    assert error.mean() < scale.mean() / 3  # uniform rounding error averages a quarter step


def test_tie_nbits_refuses_an_asymmetric_head():
    model, _ = stub(64)
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False, bits=4, op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    with pytest.raises(ValueError, match="symmetric"):
        tie_nbits(quantizer.model.model)


def _session(model: onnx.ModelProto, config: dict[str, str], optimized=None) -> ort.InferenceSession:
    """An onnxruntime session with these session config entries; `optimized`: where it saves the graph it runs."""
    options = ort.SessionOptions()
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _optimized_ops(model: onnx.ModelProto, config: dict[str, str], path) -> list[str]:
    """The op types of the graph onnxruntime keeps after its optimizations, with these session config entries."""
    _session(model, config, optimized=path)
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_dequantize_at_load_stores_int8_columns_and_folds_to_their_fp32_values(tmp_path):
    model, table = stub(hidden=16)
    tie_float(model)
    assert dequantize_at_load(model) == 1  # the stub's one MatMul, the tied head
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q, scale = inits["head/int8"], inits["head/scale"]
    head = table.T  # [H, V]
    # per output column: scale = max |w| / 127, q = round(w / scale); every weight within half a step
    np.testing.assert_array_equal(scale, np.abs(head).max(axis=0) / np.float32(127))
    np.testing.assert_array_equal(q, np.rint(head / scale).astype(np.int8))
    assert q.dtype == np.int8 and q.shape == (16, V) and np.abs(q).max() == 127
    weights = q.astype(np.float32) * scale
    assert np.abs(weights - head).max() <= scale.max() / 2
    # with FOLD_AT_LOAD onnxruntime computes the DequantizeLinear once, at load; without it, every run
    assert "DequantizeLinear" not in _optimized_ops(model, FOLD_AT_LOAD, tmp_path / "folded.onnx")
    assert "DequantizeLinear" in _optimized_ops(model, {}, tmp_path / "kept.onnx")
    logits, hidden = _session(model, FOLD_AT_LOAD).run(["logits", "hidden"], {"input_ids": IDS})
    # the lookup gathers columns of the dequantized head: exactly its fp32 values
    np.testing.assert_array_equal(hidden, weights.T[IDS])
    np.testing.assert_allclose(logits, hidden @ weights, rtol=1e-5, atol=1e-5)


def test_prune_vocabulary_computes_the_kept_ids_only_and_cuts_the_rest(tmp_path):
    model, table = stub(hidden=16)
    tie_float(model)
    dequantize_at_load(model)
    full_logits, full_hidden = _session(model, FOLD_AT_LOAD).run(["logits", "hidden"], {"input_ids": IDS})
    keep = np.array([0, 1, 3, 7, 12, 30, 44], dtype=np.int64)
    assert prune_vocabulary(model, keep) == 7
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    # the file keeps one int8 table [H, V] (the lookup reads all of it) and no float copy of it
    assert inits["head/int8"].shape == (16, V)
    assert not [k for k, v in inits.items() if v.dtype == np.float32 and v.size >= 16 * len(keep)]
    # onnxruntime folds the kept head (Gather of constants, DequantizeLinear) at load, as int8's
    ops = _optimized_ops(model, FOLD_AT_LOAD, tmp_path / "folded.onnx")
    assert "DequantizeLinear" not in ops and ops.count("Gather") == 2  # the lookup's columns and scales
    logits, hidden = _session(model, FOLD_AT_LOAD).run(["logits", "hidden"], {"input_ids": IDS})
    # the lookup is exact: int8 x scale per id, what the folded DequantizeLinear computed
    np.testing.assert_array_equal(hidden, full_hidden)
    # kept ids: int8's logits; the rest -inf, at full width
    assert logits.shape == full_logits.shape == (2, 4, V)
    np.testing.assert_allclose(logits[..., keep], full_logits[..., keep], rtol=0, atol=1e-5)
    cut = np.setdiff1d(np.arange(V), keep)
    assert np.isneginf(logits[..., cut]).all()


@pytest.mark.parametrize("keep", [[3, 2], [], [0, 50], [-1, 4]])
def test_prune_vocabulary_refuses_ids_that_are_not_sorted_unique_and_in_range(keep):
    model, _ = stub(hidden=16)
    tie_float(model)
    dequantize_at_load(model)
    with pytest.raises(ValueError, match="sorted unique ids"):
        prune_vocabulary(model, np.array(keep, dtype=np.int64))


def test_prune_vocabulary_needs_the_int8_graph():
    model, _ = stub(hidden=16)
    tie_float(model)
    with pytest.raises(ValueError, match="dequantize_at_load"):
        prune_vocabulary(model, np.array([0, 1]))


class _CharTokenizer:
    """One id per character (ord), turn markers 1 and 2: enough of a tokenizer for vocabulary_ids."""

    def __len__(self) -> int:
        return 200

    def encode(self, text, add_special_tokens=False):
        return list(map(ord, text))

    def apply_chat_template(self, messages, tokenize=True):
        return [i for m in messages for i in [1, *self.encode(m["content"]), 2]]


def test_vocabulary_ids_keep_the_common_ids_the_stops_and_every_id_of_the_data(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "ab!"}, {"role": "assistant", "content": "zz"}]}\n\n')
    ids = vocabulary_ids(_CharTokenizer(), data, common=5, always=[106])
    # the words "ab" and "zz" add " " and the Capitalised "A" and "Z"; "!" comes from the rendering
    assert ids.tolist() == [0, 1, 2, 3, 4, *map(ord, " !AZab"), 106, ord("z")]
    assert vocabulary_ids(_CharTokenizer(), data, common=0).tolist() == [1, 2, *map(ord, " !AZabz")]
    data.write_text('{"messages": []}\n{"text": "no messages"}\n')
    with pytest.raises(ValueError, match=r"train.jsonl:2: messages"):
        vocabulary_ids(_CharTokenizer(), data, common=5)
    data.write_text('{"messages": [{"role": "user", "content": "\\u00ff"}]}\n')  # id 255 of a 200-id tokenizer
    with pytest.raises(ValueError, match="outside the tokenizer's 200 ids"):
        vocabulary_ids(_CharTokenizer(), data, common=5)
    data.write_text("\n")
    with pytest.raises(ValueError, match="no token ids to keep"):
        vocabulary_ids(_CharTokenizer(), data, common=0)


def test_the_cli_lists_every_variant_the_worker_writes_under_the_name_transformers_js_loads():
    from mlx_bluey.export_args import DEFAULT_VARIANTS, ONNX_VARIANTS
    from mlx_bluey.export_env.onnx_export import VARIANTS

    assert sorted(ONNX_VARIANTS) == sorted(VARIANTS) and set(DEFAULT_VARIANTS["onnx"]) <= set(VARIANTS)
    # Transformers.js 4.3.1 loads onnx/{model_file_name}{suffix of the dtype}.onnx (DEFAULT_DTYPE_SUFFIX_MAPPING)
    suffix = {"fp32": "", "fp16": "_fp16", "int8": "_int8", "q8": "_quantized", "q4": "_q4"}
    assert all(v.file == f"{v.model_file_name}{suffix[v.dtype]}.onnx" for v in VARIANTS.values())
