"""Graph surgery on the exported ONNX decoder: quantized variants whose tied embedding is stored once.

Runs in the export environment (onnx + onnxruntime), never imports MLX.

Gemma 3 ties its input embedding to its output head. Optimum's export writes that matrix twice,
once as the Gather table [V, H] and once, transposed, as the logits MatMul weight [H, V]. For the
embedded 270M, V x H = 262,144 x 640 = 168M of its 268M parameters: each copy is 671 MB in fp32,
168 MB in 8 bits. Storing it once is what makes a browser-sized download possible:

    q8, two copies (embedding + head):  268M + 168M = 436M bytes + scales   (PLATFORM_FACTS: 417 MiB)
    q8, one copy:                        268M        = 268M bytes + scales   (~276 MB at block 128)

The head keeps its quantized MatMulNBits weight (B: [V, K/block, block*bits/8] uint8, scales
[V, K/block]); the embedding lookup becomes plain ONNX ops reading that same B: Gather the token's
row, unpack nibbles (4 bits), subtract the implicit zero point 2^(bits-1), multiply by the row's
block scales. Plain ops, because GatherBlockQuantized has no WASM kernel (PLATFORM_FACTS).
For float variants the lookup gathers columns of the [H, V] head weight and transposes.

The int8 variant (dequantize_at_load) stores every MatMul weight as int8 with one fp32 scale per output
column, behind a DequantizeLinear. onnxruntime folds those nodes into fp32 weights when the session is
created with FOLD_AT_LOAD, so the file has 8-bit size and the session computes with plain fp32 MatMul, the
kernel WASM runs fastest (benchmarks/browser-bluey-270m-*.md). Without that option onnxruntime keeps the
DequantizeLinear nodes (it saves them for its quantized-operator fusions) and dequantizes every weight
on every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass
class Tied:
    gather: onnx.NodeProto  # the embedding lookup: Gather(table [V, H], input_ids)
    head: onnx.NodeProto  # the node whose output is `logits`: MatMul(hidden, [H, V]) or MatMulNBits
    table: str  # name of the Gather's [V, H] initializer


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def _producer(model: onnx.ModelProto, output: str) -> onnx.NodeProto:
    for node in model.graph.node:
        if output in node.output:
            return node
    raise ValueError(f"no node produces {output!r}")


def find_tied(model: onnx.ModelProto) -> Tied:
    """The embedding Gather and the logits head; raises when the graph is not a tied decoder."""
    inits = _initializers(model)
    gathers = [
        n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits and n.input[1] == "input_ids"
    ]
    if len(gathers) != 1:
        raise ValueError(f"expected one embedding Gather on input_ids, found {len(gathers)}")
    head = _producer(model, "logits")
    while head.op_type not in ("MatMul", "MatMulNBits"):  # e.g. Gemma's final-logit soft-capping (Tanh, Mul...)
        head = _producer(model, head.input[0])
    return Tied(gathers[0], head, gathers[0].input[0])


def replace_node(model: onnx.ModelProto, old: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
    """`nodes` where `old` was, in order: the graph stays topologically sorted."""
    index = list(model.graph.node).index(old)
    model.graph.node.remove(old)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(index + offset, node)


def _replace_gather(model: onnx.ModelProto, tied: Tied, nodes: list[onnx.NodeProto], drop: str) -> None:
    graph = model.graph
    replace_node(model, tied.gather, nodes)
    for init in list(graph.initializer):
        if init.name == drop:
            graph.initializer.remove(init)


def tie_float(model: onnx.ModelProto) -> int:
    """Float model: the lookup reads the head's [H, V] weight. Returns the bytes saved."""
    tied = find_tied(model)
    if tied.head.op_type != "MatMul":
        raise ValueError(f"tie_float expects a float MatMul head, found {tied.head.op_type}")
    inits = _initializers(model)
    table, head_weight = inits[tied.table], inits[tied.head.input[1]]
    if list(head_weight.dims) != list(reversed(table.dims)):
        raise ValueError(f"head weight {list(head_weight.dims)} is not the transposed table {list(table.dims)}")
    out = tied.gather.output[0]
    columns = out + "/tied_columns"
    nodes = [
        helper.make_node(
            "Gather", [tied.head.input[1], "input_ids"], [columns], axis=1, name="tied/gather"
        ),  # [H, b, s]
        helper.make_node("Transpose", [columns], [out], perm=[1, 2, 0], name="tied/transpose"),  # [b, s, H]
    ]
    saved = int(np.prod(table.dims)) * (2 if table.data_type == TensorProto.FLOAT16 else 4)
    _replace_gather(model, tied, nodes, drop=tied.table)
    return saved


def tie_nbits(model: onnx.ModelProto) -> int:
    """Quantized model: the lookup dequantizes rows of the head's MatMulNBits weight. Returns bytes saved.

    Long (about 70 lines) on purpose: it writes one subgraph node by node, and every node names the tensors
    of its neighbours; split up, those names would be spread over several functions."""
    tied = find_tied(model)
    head = tied.head
    if head.op_type != "MatMulNBits" or len(head.input) > 3 and head.input[3]:
        raise ValueError("tie_nbits expects a symmetric MatMulNBits head (no zero points)")
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    bits, block, hidden, vocab = attrs["bits"], attrs["block_size"], attrs["K"], attrs["N"]
    inits = _initializers(model)
    table = inits[tied.table]
    if list(table.dims) != [vocab, hidden]:
        raise ValueError(f"embedding {list(table.dims)} does not match the head's N x K = {vocab} x {hidden}")
    blocks = -(-hidden // block)  # the quantizer pads K up to whole blocks; the padding is sliced off below
    out = tied.gather.output[0]
    p = "tied/"  # every new name starts with it
    consts = {
        p + "zero": np.array(2 ** (bits - 1), dtype=np.float32),  # implicit zero point of symmetric MatMulNBits
        p + "row_shape": np.array([blocks, block], dtype=np.int64),
        p + "padded": np.array([blocks * block], dtype=np.int64),
        p + "scales_shape": np.array([vocab, blocks, 1], dtype=np.int64),
    }
    if bits == 4 or blocks * block != hidden:
        consts[p + "last"] = np.array([-1], dtype=np.int64)
    if bits == 4:
        consts.update({p + "low": np.array(15, dtype=np.uint8), p + "four": np.array(4, dtype=np.uint8)})
    if blocks * block != hidden:
        consts.update({p + "starts": np.array([0], dtype=np.int64), p + "ends": np.array([hidden], dtype=np.int64)})
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    nodes = [
        helper.make_node(
            "Gather", [head.input[1], "input_ids"], [p + "packed"], name=p + "gather"
        ),  # [b,s,blocks,blob]
        # the head's own scales seen as [V, blocks, 1] (a view, not a second copy in the file)
        helper.make_node("Reshape", [head.input[2], p + "scales_shape"], [p + "scales"], name=p + "scales_3d"),
    ]
    values = p + "packed"
    if bits == 4:  # two values per byte, the first in the low nibble
        nodes += [
            helper.make_node("BitwiseAnd", [p + "packed", p + "low"], [p + "lo"], name=p + "lo"),
            helper.make_node("BitShift", [p + "packed", p + "four"], [p + "hi"], direction="RIGHT", name=p + "hi"),
            helper.make_node("Unsqueeze", [p + "lo", p + "last"], [p + "lo1"], name=p + "lo1"),
            helper.make_node("Unsqueeze", [p + "hi", p + "last"], [p + "hi1"], name=p + "hi1"),
            helper.make_node("Concat", [p + "lo1", p + "hi1"], [p + "pairs"], axis=-1, name=p + "pairs"),
        ]
        values = p + "pairs"  # [b, s, blocks, block/2, 2]
    elif bits != 8:
        raise ValueError(f"tie_nbits handles 4 and 8 bits, not {bits}")
    nodes += [
        helper.make_node("Shape", ["input_ids"], [p + "ids_shape"], name=p + "ids_shape"),
        helper.make_node("Concat", [p + "ids_shape", p + "row_shape"], [p + "block_shape"], axis=0, name=p + "bshape"),
        helper.make_node("Reshape", [values, p + "block_shape"], [p + "q"], name=p + "q"),  # [b, s, blocks, block]
        helper.make_node("Cast", [p + "q"], [p + "qf"], to=TensorProto.FLOAT, name=p + "cast"),
        helper.make_node("Sub", [p + "qf", p + "zero"], [p + "centred"], name=p + "centre"),
        helper.make_node(
            "Gather", [p + "scales", "input_ids"], [p + "row_scales"], name=p + "scales"
        ),  # [b,s,blocks,1]
        helper.make_node("Mul", [p + "centred", p + "row_scales"], [p + "deq"], name=p + "scale"),
        helper.make_node("Concat", [p + "ids_shape", p + "padded"], [p + "out_shape"], axis=0, name=p + "oshape"),
    ]
    if blocks * block == hidden:
        nodes.append(helper.make_node("Reshape", [p + "deq", p + "out_shape"], [out], name=p + "rows"))  # [b, s, H]
    else:
        nodes += [
            helper.make_node("Reshape", [p + "deq", p + "out_shape"], [p + "rows"], name=p + "rows"),
            helper.make_node("Slice", [p + "rows", p + "starts", p + "ends", p + "last"], [out], name=p + "unpad"),
        ]
    saved = int(np.prod(table.dims)) * 4
    _replace_gather(model, tied, nodes, drop=tied.table)
    return saved


# The session option that makes onnxruntime fold the int8 variant's DequantizeLinear nodes into constants
# ("session.disable_quant_qdq": no QDQ fusions, so constant folding may run them at load).
FOLD_AT_LOAD = {"session.disable_quant_qdq": "1"}


def dequantize_at_load(model: onnx.ModelProto) -> int:
    """Every MatMul weight [K, N] -> int8 [K, N] + fp32 scale [N] -> DequantizeLinear(axis=1). Returns how many.

    Symmetric per output column: scale = max|w| / 127 over the column, q = round(w / scale) in [-127, 127],
    so each weight is off by at most scale / 2. Run after tie_float: the embedding lookup then gathers columns
    of the dequantized head, one copy in the file and one in the session."""
    inits = _initializers(model)
    nodes = []
    for node in model.graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(weight)
        scale = np.abs(w).max(axis=0) / 127.0
        scale[scale == 0] = 1.0  # an all-zero column stays zero
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        model.graph.initializer.remove(weight)
        del inits[weight.name]
        name = weight.name  # the DequantizeLinear's output keeps the name every reader already uses
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q, name + "/int8"),
                numpy_helper.from_array(scale.astype(np.float32), name + "/scale"),
            ]
        )
        nodes.append(
            helper.make_node("DequantizeLinear", [name + "/int8", name + "/scale"], [name], axis=1, name=name + "/dq")
        )
    for offset, node in enumerate(nodes):  # before every reader: the graph stays topologically sorted
        model.graph.node.insert(offset, node)
    return len(nodes)


def dequantized_rows(model: onnx.ModelProto, ids: list[int]) -> np.ndarray:
    """What tie_nbits' lookup computes for `ids`, in NumPy: the test's independent check of the ONNX ops."""
    inits = _initializers(model)
    gather = next(n for n in model.graph.node if n.name == "tied/gather")
    head = next(n for n in model.graph.node if n.op_type == "MatMulNBits" and n.input[1] == gather.input[0])
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    packed = numpy_helper.to_array(inits[gather.input[0]])[ids]  # [n, blocks, blob]
    if attrs["bits"] == 4:
        packed = np.stack([packed & 15, packed >> 4], axis=-1)
    q = packed.reshape(len(ids), -1, attrs["block_size"]).astype(np.float32) - 2 ** (attrs["bits"] - 1)
    scales = numpy_helper.to_array(inits[head.input[2]]).reshape(attrs["N"], -1, 1)[ids]
    return (q * scales).reshape(len(ids), -1)[:, : attrs["K"]]
