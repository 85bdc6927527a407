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
