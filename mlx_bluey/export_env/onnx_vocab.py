"""The int8-vocab variant: the int8 variant with its output head cut down to the token ids a character uses.

Runs in the export environment (onnx + onnxruntime + transformers' tokenizer), never imports MLX.

Gemma 3's head multiplies every hidden state by a [H, 262,144] matrix: for the embedded 270M that is
640 x 262,144 = 168M of its 268M weights, read at every decode step. A character speaks a small part of that
vocabulary. This variant keeps the head's columns for

    every id below `common` (Gemma's BPE numbers its pieces in merge order, frequent pieces first), the
    byte-fallback pieces among them (<0x00>..<0xFF>, ids 238-493), so any text can still be spelled, and
    every id of the character's training conversations (rendered with the chat template, turn markers included),
    every word of them in the forms it takes elsewhere: as written, lower case and Capitalised, each with and
    without a leading space ("Bingo" opening a line is the piece "Bingo", after a space "▁Bingo"),

and computes logits for those only (26,270 of 262,144 ids for Bluey's training split, benchmarks/export-270m:
10x less head work). The other ids get logit -inf, scattered back into a full-width output, so
Transformers.js, the page's sampler and the stop ids see the usual shape; the model can never say a token
outside the kept set. The embedding lookup still covers every id: it gathers int8 columns of the full table
and scales them (no fp32 copy of the 168M table). The parity report counts what this costs: the share of
positions whose reference top-1 id was cut (parity.compare_logits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..parity import template_ids
from .onnx_graph import replace_node

P = "vocab/"  # every name this rewrite adds starts with it
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def vocabulary_ids(tokenizer, data: Path, common: int, always: Iterable[int] = ()) -> np.ndarray:
    """Sorted ids to keep: every id below `common`, `always` (e.g. the stop ids), every id of the chat
    template's rendering of each conversation in `data` (JSONL, one {"messages": [...]} per line), and of each
    of its words as written, lower case and Capitalised, with and without a leading space."""
    vocab = len(tokenizer)
    ids = set(range(min(common, vocab))) | set(always)
    words = set()
    for number, line in enumerate(data.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            messages = json.loads(line)["messages"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{data}:{number}: messages: not a chat line ({error})") from error
        ids.update(template_ids(tokenizer.apply_chat_template(messages, tokenize=True)))
        words.update(w for m in messages for w in WORD.findall(m.get("content", "")))
    for word in words:
        for form in {word, word.lower(), word.capitalize()}:
            ids.update(tokenizer.encode(form, add_special_tokens=False))
            ids.update(tokenizer.encode(" " + form, add_special_tokens=False))
    if not ids:
        raise ValueError(f"{data}: no token ids to keep (no conversations, and vocabulary_common is 0)")
    if max(ids) >= vocab:
        raise ValueError(f"token id {max(ids)} is outside the tokenizer's {vocab} ids")
    return np.array(sorted(ids), dtype=np.int64)


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    found = [n for n in model.graph.node if n.name == name]
    if len(found) != 1:
        raise ValueError(
            f"expected one node named {name!r} (run tie_float, then dequantize_at_load), found {len(found)}"
        )
    return found[0]


def prune_vocabulary(model: onnx.ModelProto, keep: np.ndarray) -> int:
    """The head computes the `keep` columns only; the others' logits are -inf. Returns how many ids are kept.

    Expects tie_float's lookup (node "tied/gather" reading the head weight W [H, V]) and dequantize_at_load's
    W = DequantizeLinear(W/int8, W/scale). Afterwards:
        lookup:  Gather(W/int8, input_ids, axis=1) -> Cast -> x Gather(W/scale, input_ids)   (int8 table kept)
        head:    DequantizeLinear(Gather(W/int8, keep, axis=1), Gather(W/scale, keep))       (folded at load)
        logits:  ScatterElements(-inf [b, s, V], keep, logits of the kept ids, axis=2)
    """
    graph = model.graph
    lookup = _node(model, "tied/gather")
    weight = lookup.input[0]
    dq = _node(model, weight + "/dq")
    q, scale = dq.input[0], dq.input[1]
    heads = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] == weight]
    if len(heads) != 1:
        raise ValueError(f"expected one MatMul reading {weight}, found {len(heads)}")
    dims = {i.name: list(i.dims) for i in graph.initializer}
    vocab = dims[q][1]
    keep = np.asarray(keep, dtype=np.int64)
    if keep.ndim != 1 or len(keep) == 0 or keep.min() < 0 or keep.max() >= vocab or (np.diff(keep) <= 0).any():
        raise ValueError(f"keep must be sorted unique ids in [0, {vocab})")
    graph.initializer.extend(
        [
            numpy_helper.from_array(keep, P + "keep"),
            numpy_helper.from_array(np.array([vocab], dtype=np.int64), P + "vocab"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), P + "zero"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), P + "two"),
        ]
    )
    # 1. the lookup: int8 columns of the whole table, scaled per id ([H, b, s] x [b, s] broadcasts)
    columns = lookup.output[0]
    lookup_nodes = [
        helper.make_node("Gather", [q, "input_ids"], [P + "columns_q"], axis=1, name=P + "lookup"),
        helper.make_node("Cast", [P + "columns_q"], [P + "columns_f"], to=TensorProto.FLOAT, name=P + "lookup_cast"),
        helper.make_node("Gather", [scale, "input_ids"], [P + "columns_scale"], name=P + "lookup_scale"),
        helper.make_node("Mul", [P + "columns_f", P + "columns_scale"], [columns], name=P + "lookup_mul"),
    ]
    replace_node(model, lookup, lookup_nodes)
    # 2. the head: the kept columns, dequantized (constant inputs only: onnxruntime folds them at load)
    head_nodes = [
        helper.make_node("Gather", [q, P + "keep"], [P + "head_q"], axis=1, name=P + "head_gather"),
        helper.make_node("Gather", [scale, P + "keep"], [P + "head_scale"], name=P + "head_scale"),
        helper.make_node("DequantizeLinear", [P + "head_q", P + "head_scale"], [P + "head"], axis=1, name=P + "head"),
    ]
    graph.node.remove(dq)
    for offset, node in enumerate(head_nodes):
        graph.node.insert(offset, node)
    heads[0].input[1] = P + "head"
    # 3. the logits: every tensor from the head to `logits` is now [b, s, kept]; drop their recorded shapes
    producer = next(n for n in graph.node if "logits" in n.output)
    producer.output[list(producer.output).index("logits")] = P + "logits"
    narrowed = {P + "logits", *heads[0].output}
    for node in graph.node:
        if any(i in narrowed for i in node.input):
            narrowed.update(node.output)
    for info in [v for v in graph.value_info if v.name in narrowed]:
        graph.value_info.remove(info)
    graph.node.extend(
        [
            helper.make_node("Shape", [P + "logits"], [P + "shape"], name=P + "shape"),  # [b, s, kept]
            helper.make_node("Slice", [P + "shape", P + "zero", P + "two"], [P + "bs"], name=P + "bs"),
            helper.make_node("Concat", [P + "bs", P + "vocab"], [P + "full_shape"], axis=0, name=P + "full_shape"),
            helper.make_node(
                "ConstantOfShape",
                [P + "full_shape"],
                [P + "full"],
                value=helper.make_tensor("minus_inf", TensorProto.FLOAT, [1], [float("-inf")]),
                name=P + "full",
            ),
            helper.make_node("Expand", [P + "keep", P + "shape"], [P + "index"], name=P + "index"),  # [b, s, kept]
            helper.make_node(
                "ScatterElements", [P + "full", P + "index", P + "logits"], ["logits"], axis=2, name=P + "scatter"
            ),
        ]
    )
    return len(keep)
