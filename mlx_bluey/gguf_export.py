"""`mlx_bluey export FUSED --format gguf`: a fused Gemma 3 directory as GGUF files for llama.cpp, Ollama and
LM Studio, one per variant, each with an Ollama Modelfile beside it.

    mlx_bluey export fused/bluey-270m --format gguf --output exports/bluey-270m-gguf --variants f16,q8_0

Written with the `gguf` package's writer, in the layout llama.cpp's Gemma 3 loader reads
(llama.cpp/src/models/gemma3.cpp in llama-cpp-python 0.3.36):
- tensors renamed to llama.cpp's (token_embd, blk.N.attn_q, ...; the inverse of embedded._BLOCK_NAMES);
  RMSNorm scales stored as (1 + w), because llama.cpp multiplies by the stored value and Hugging Face
  adds the 1 at run time; the tied embedding stored once (llama.cpp reuses token_embd as the head);
- `f16`: matrices in float16, norms in float32 (as llama.cpp's converter does); `q8_0`: matrices in
  Q8_0 (blocks of 32 int8 with one f16 scale: 34 bytes per 32 weights, 8.5 bits each), norms float32;
- keys: the sizes, `rope.freq_base` (global layers) and `rope.freq_base_swa` (local layers),
  `attention.sliding_window` and `attention.sliding_window_pattern` (written, though llama.cpp would
  assume 10,000 and 6 for Gemma 3: a model with other values is then read right); llama.cpp scales
  queries by 1/sqrt(head_dim), so a config whose query_pre_attn_scalar differs is refused;
- the tokenizer from tokenizer.model (SentencePiece, what llama.cpp's "llama" tokenizer runs), the
  special ids, `<end_of_turn>` as end-of-turn, the training chat template, and the CLI's sampling
  defaults as `general.sampling.*`.
The output directory is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_directory
from .chat_format import CHAT_TEMPLATE
from .embedded import _BLOCK_NAMES
from .export_args import ExportArgs
from .generation_settings import REPETITION_CONTEXT_TOKENS, GenerationSettings
from .system_message import fused_system

VARIANTS = ("f16", "q8_0")
# Hugging Face name (after "model.layers.N.") -> llama.cpp's, per block: the inverse of the embedded reader's map.
_HF_TO_GGUF = {hf: gguf for gguf, hf in _BLOCK_NAMES.items()}
# SentencePiece piece type -> llama.cpp token type (gguf.TokenType): NORMAL 1, UNKNOWN 2, CONTROL 3,
# USER_DEFINED 4, UNUSED 5, BYTE 6. SentencePiece numbers them NORMAL 1, UNKNOWN 2, CONTROL 3,
# USER_DEFINED 4, BYTE 6, UNUSED 5: the same numbers.
_TOKEN_TYPES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6}


class GgufExportError(Exception):
    pass


def _config(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    config = config.get("text_config", config) if config.get("model_type") == "gemma3" else config
    if config.get("model_type") != "gemma3_text":
        raise GgufExportError(
            f"{model_dir}/config.json: model_type {config.get('model_type')!r}, not a Gemma 3 text model"
        )
    head_dim = config.get("head_dim", 256)
    if config.get("query_pre_attn_scalar", head_dim) != head_dim:
        raise GgufExportError(
            f"{model_dir}/config.json: query_pre_attn_scalar {config['query_pre_attn_scalar']} != head_dim {head_dim}; "
            "llama.cpp scales Gemma 3's queries by 1/sqrt(head_dim) and would compute another model"
        )
    if config.get("rope_scaling") or config.get("attn_logit_softcapping"):
        raise GgufExportError(f"{model_dir}/config.json: rope_scaling / attn_logit_softcapping are not supported here")
    return config


def sliding_layers(config: dict) -> list[bool]:
    """Per layer: True for local (sliding-window) attention, from layer_types or the pattern (every Nth global)."""
    n = config["num_hidden_layers"]
    if config.get("layer_types"):
        return [kind == "sliding_attention" for kind in config["layer_types"]]
    pattern = config.get("sliding_window_pattern") or config.get("_sliding_window_pattern") or 6
    return [(i + 1) % pattern != 0 for i in range(n)]


def gguf_tensor_name(hf_name: str) -> str:
    """model.layers.3.self_attn.q_proj.weight -> blk.3.attn_q.weight; model.embed_tokens -> token_embd."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"] and parts[-1] == "weight" and ".".join(parts[3:-1]) in _HF_TO_GGUF:
        return f"blk.{parts[2]}.{_HF_TO_GGUF['.'.join(parts[3:-1])]}.weight"
    raise GgufExportError(f"no GGUF name for tensor {hf_name}")


def _vocabulary(model_dir: Path) -> tuple[list[bytes], list[float], list[int]]:
    """tokens, scores and llama.cpp token types from tokenizer.model and the tokenizer's added tokens."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    path = model_dir / "tokenizer.model"
    if not path.exists():
        raise GgufExportError(
            f"{model_dir}: no tokenizer.model (llama.cpp runs Gemma's SentencePiece vocabulary); "
            "fuse the adapter again with this version, which copies it from the base model"
        )
    proto = pb.ModelProto()
    proto.ParseFromString(path.read_bytes())
    tokens = [piece.piece.encode() for piece in proto.pieces]
    scores = [float(piece.score) for piece in proto.pieces]
    types = [_TOKEN_TYPES[int(piece.type)] for piece in proto.pieces]
    # The tokenizer's added tokens, as llama.cpp's converter reads them: special ones are CONTROL (matched whole,
    # never printed), others USER_DEFINED. transformers 5 keeps them in tokenizer.json, 4 in tokenizer_config.json.
    added = []
    if (model_dir / "tokenizer.json").exists():
        added += json.loads((model_dir / "tokenizer.json").read_text()).get("added_tokens", [])
    if (model_dir / "tokenizer_config.json").exists():
        decoder = json.loads((model_dir / "tokenizer_config.json").read_text()).get("added_tokens_decoder", {})
        added += [{"id": int(i), **token} for i, token in decoder.items()]
    for token in added:
        i = token["id"]
        if i < len(tokens) and tokens[i] == token["content"].encode():
            types[i] = 3 if token.get("special") else 4
    return tokens, scores, types


def _special_ids(model_dir: Path) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    return {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
        "eot": end_of_turn if end_of_turn != tokenizer.unk_token_id else None,
    }


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(model_dir.glob("model*.safetensors"))
    if not files:
        raise GgufExportError(f"{model_dir}: no model*.safetensors")
    weights = {}
    for path in files:
        weights.update(load_file(str(path)))
    return weights


def _tensor(name: str, array: np.ndarray, variant: str):
    """(data, raw_dtype) in the variant's storage: norms (+1) and other vectors float32, matrices f16 or Q8_0."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    array = array.astype(np.float32)
    if name.endswith("norm.weight"):
        array = array + 1.0  # Gemma's RMSNorm multiplies by (1 + w); llama.cpp by the stored value
    if array.ndim == 1:
        return array, None
    if variant == "f16":
        return array.astype(np.float16), None
    if array.shape[-1] % 32:
        raise GgufExportError(f"{name}: rows of {array.shape[-1]} do not split into Q8_0's blocks of 32")
    return quantize(array, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0


@dataclass
class Source:
    """What every variant of one model directory is written from, read once per export."""

    config: dict  # the text config (_config: checked for what llama.cpp reads)
    vocabulary: tuple[list[bytes], list[float], list[int]]  # tokens, scores, llama.cpp token types
    special: dict  # bos, eos, unk, pad and end-of-turn ids
    weights: dict[str, np.ndarray]  # Hugging Face tensor names -> arrays (float32 for a fused model)


def read_source(model_dir: Path) -> Source:
    config = _config(model_dir)
    vocabulary = _vocabulary(model_dir)
    if len(vocabulary[0]) != config["vocab_size"]:
        raise GgufExportError(
            f"{model_dir}: tokenizer.model has {len(vocabulary[0])} pieces, config vocab_size {config['vocab_size']}"
        )
    return Source(config, vocabulary, _special_ids(model_dir), _weights(model_dir))


def write_gguf(
    model_dir: Path, output: Path, variant: str, name: str | None = None, source: Source | None = None
) -> Path:
    """One GGUF file of `variant` from a Hugging Face Gemma 3 directory (a fused adapter, or a base model);
    `source`: the directory already read (export_gguf reads it once for every variant)."""
    import gguf

    if variant not in VARIANTS:
        raise GgufExportError(f"unknown GGUF variant {variant!r} (choose from {', '.join(VARIANTS)})")
    source = source or read_source(model_dir)
    writer = gguf.GGUFWriter(str(output), "gemma3")
    writer.add_name(name or model_dir.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if variant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_model_keys(writer, source.config)
    _add_tokenizer_keys(writer, source)
    for hf_name in sorted(source.weights):
        if hf_name == "lm_head.weight":
            continue  # tied: llama.cpp uses token_embd as the head
        gguf_name = gguf_tensor_name(hf_name)
        data, raw_dtype = _tensor(gguf_name, source.weights[hf_name], variant)
        writer.add_tensor(gguf_name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return output


def _add_model_keys(writer, config: dict) -> None:
    writer.add_context_length(config.get("max_position_embeddings", 32_768))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_key_length(config.get("head_dim", 256))
    writer.add_value_length(config.get("head_dim", 256))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_rope_freq_base(config.get("rope_theta", 1_000_000.0))
    writer.add_rope_freq_base_swa(config.get("rope_local_base_freq", 10_000.0))
    writer.add_sliding_window(config["sliding_window"])
    writer.add_sliding_window_pattern(sliding_layers(config))
    if config.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])


def _add_tokenizer_keys(writer, source: Source) -> None:
    """The vocabulary, special ids, chat template and the CLI's sampling defaults."""
    tokens, scores, types = source.vocabulary
    special = source.special
    defaults = GenerationSettings()
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(special["bos"])
    writer.add_eos_token_id(special["eos"])
    writer.add_unk_token_id(special["unk"])
    writer.add_pad_token_id(special["pad"])
    if special["eot"] is not None:
        writer.add_eot_token_id(special["eot"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_sampling_temp(defaults.temperature)
    writer.add_sampling_top_k(defaults.top_k)
    writer.add_sampling_top_p(defaults.top_p)
    writer.add_sampling_min_p(defaults.min_p)
    # llama.cpp's penalty window is its sampler's history, and its server pushes the (cached) prompt into that
    # history: there the last 64 tokens can hold the system message's facts, which the CLI and the page leave out
    # of the window (sampling.py says why). No GGUF key or Ollama parameter leaves the prompt out.
    writer.add_sampling_penalty_repeat(defaults.repetition_penalty)
    writer.add_sampling_penalty_last_n(REPETITION_CONTEXT_TOKENS)


# ------------------------------------------------------------------------------------------ Q4_K_M


def quantize_with_llama_cpp(source: Path, output: Path, variant: str) -> None:
    """A K-quant (Q4_K_M) of an f16 GGUF by llama.cpp's own quantizer (llama-cpp-python's llama_model_quantize)."""
    import os

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[variant]
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(output).encode(), params)
    if status != 0:
        raise GgufExportError(f"llama.cpp could not quantize {source} to {variant} (status {status})")


# ------------------------------------------------------------------------------------------ Modelfile

# Ollama's Go template for the training chat format (chat_template.jinja): a system message folded into the
# first user turn, "model" for the assistant, every turn closed by <end_of_turn> and a newline, then the
# generation prompt. llama.cpp adds <bos> itself (tokenizer.ggml.add_bos_token), so the template leaves it
# out: <bos> + this text == chat_format.render(..., add_generation_prompt=True), byte for byte, for
# contents without leading or trailing whitespace (Jinja trims them; Go templates have no trim).
OLLAMA_TEMPLATE = (
    '{{ $system := "" }}{{ range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}{{ end }}{{ end }}'
    "{{ $first := true }}{{ range .Messages }}"
    '{{ if eq .Role "user" }}<start_of_turn>user\n{{ if and $first $system }}{{ $system }}\n\n{{ end }}'
    "{{ .Content }}<end_of_turn>\n{{ $first = false }}"
    '{{ else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n{{ end }}'
    "{{ end }}<start_of_turn>model\n"
)


def modelfile(gguf_name: str, system: str | None, stops: list[str]) -> str:
    """An Ollama Modelfile for one GGUF beside it: the chat template, stop strings, the CLI's sampling defaults."""
    d = GenerationSettings()
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{OLLAMA_TEMPLATE}"""']
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines += [
        f"PARAMETER temperature {d.temperature}",
        f"PARAMETER top_p {d.top_p}",
        f"PARAMETER top_k {d.top_k}",
        f"PARAMETER min_p {d.min_p}",
        f"PARAMETER repeat_penalty {d.repetition_penalty}",
        f"PARAMETER repeat_last_n {REPETITION_CONTEXT_TOKENS}",
        f"PARAMETER num_predict {d.max_new_tokens}",
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ parity


def reference_outputs(fused: Path, texts: list[list[int]], prompts: list[list[int]], new_tokens: int, stops: set[int]):
    """Logits of every held-out text and greedy continuations of every prompt, from the fused model in MLX (fp32)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.utils import load_model

    model, _ = load_model(fused)
    model.set_dtype(mx.float32)
    logits = [np.array(model(mx.array([ids]))[0].astype(mx.float32)) for ids in texts]
    greedy = []
    for prompt in prompts:
        out = []
        for token, _ in generate_step(mx.array(prompt), model, max_tokens=new_tokens, sampler=lambda x: x.argmax(-1)):
            out.append(int(token))
            if token in stops:
                break
        greedy.append(out)
    return {"logits": logits, "greedy": greedy}


class LlamaDecoder:
    """One GGUF file in llama.cpp (llama-cpp-python), fed token ids (the tokenizer is the fused model's)."""

    def __init__(self, path: Path, n_ctx: int):
        import os

        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=os.cpu_count())

    def logits(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def greedy(self, prompt: list[int], new_tokens: int, stops: set[int]) -> tuple[list[int], float]:
        """Greedy decode with llama.cpp's KV cache; the tokens and decode tokens/s (prompt excluded)."""
        import time

        self.llm.reset()
        self.llm.eval(prompt)
        out = []
        started = time.perf_counter()
        for _ in range(new_tokens):
            token = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(token)
            if token in stops:
                break
            self.llm.eval([token])
        elapsed = time.perf_counter() - started
        return out, (len(out) - 1) / elapsed if len(out) > 1 and elapsed > 0 else 0.0


def variant_parity(path: Path, reference: dict, texts, prompts, new_tokens: int, stops: set[int]) -> dict:
    from .parity import compare_logits, identical_prefix, summarise

    n_ctx = max(len(ids) for ids in [*texts, *(p + [0] * new_tokens for p in prompts)]) + 8
    decoder = LlamaDecoder(path, n_ctx)
    parts = [compare_logits(ref, decoder.logits(ids)) for ids, ref in zip(texts, reference["logits"])]
    same_prefix, total, speeds = [], 0, []
    for prompt, want in zip(prompts, reference["greedy"]):
        got, speed = decoder.greedy(prompt, new_tokens, stops)
        speeds.append(speed)
        same_prefix.append(identical_prefix(want, got))
        total += len(want)
    return summarise(parts, same_prefix, total, speeds, "llama_cpp_decode_tokens_per_s")


# ------------------------------------------------------------------------------------------ the command

ALL_VARIANTS = (*VARIANTS, "Q4_K_M")


def export_gguf(args: ExportArgs, log=print) -> dict:
    """GGUF variants of a fused model, each with a Modelfile, and export.json/export.md with sizes and parity."""
    import platform
    import shutil

    from transformers import AutoTokenizer

    from .special_tokens import stop_token_ids

    fused, output, variants = args.source, args.output, list(args.chosen_variants())
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown or not variants:
        raise GgufExportError(f"unknown GGUF variants {unknown} (choose from {', '.join(ALL_VARIANTS)})")
    if not (fused / "config.json").exists():
        raise GgufExportError(f"{fused}: not a model directory (no config.json); run `mlx_bluey fuse` first")
    source = read_source(fused)  # refuses what llama.cpp would read as another model before writing anything
    tokenizer = AutoTokenizer.from_pretrained(str(fused))
    stops = stop_token_ids(fused, tokenizer)
    stop_strings = [tokenizer.convert_ids_to_tokens(i) for i in stops]
    report = {"fused": str(fused), "command": args.command, "variants": [], "machine": f"{platform.machine()}"}
    with atomic_directory(output) as out:
        for i, variant in enumerate(variants):
            log(f"[{i + 1}/{len(variants)}] {variant} ...")
            file = _write_variant(source, fused, out, output.name, variant)
            (out / f"{file.stem}.Modelfile").write_text(
                modelfile(file.name, fused_system(fused), stop_strings)  # SYSTEM only if trained with one
            )
            entry = {"variant": variant, "file": file.name, "bytes": file.stat().st_size}
            entry["mb"] = round(entry["bytes"] / 1e6, 1)
            report["variants"].append(entry)
            log(f"      {file.name}: {entry['mb']} MB")
        del source  # the weights: llama.cpp loads each file for the parity
        if args.parity_data is not None and args.parity_texts > 0:
            _add_parity(report["variants"], args, out, tokenizer, set(stops), log)
        report.update(
            parity_source=str(args.parity_data), parity_texts=args.parity_texts, greedy_prompts=args.greedy_prompts,
            greedy_tokens=args.greedy_tokens,
        )  # fmt: skip
        for name in ("GEMMA_TERMS.html", "NOTICE.md", "LICENSE", "USE_POLICY.md"):
            if (fused / name).exists():
                shutil.copy(fused / name, out / name)
        write_report(out, report)
    return report


def _write_variant(source: Source, fused: Path, out: Path, name: str, variant: str) -> Path:
    """out/NAME-VARIANT.gguf; Q4_K_M by llama.cpp's quantizer from the f16 file (written for it when not wanted)."""
    file = out / f"{name}-{variant}.gguf"
    if variant == "Q4_K_M":
        f16 = out / f"{name}-f16.gguf"
        start = f16 if f16.exists() else write_gguf(fused, out / ".f16.gguf", "f16", name=name, source=source)
        quantize_with_llama_cpp(start, file, variant)
        if start.name.startswith("."):
            start.unlink()
    else:
        write_gguf(fused, file, variant, name=name, source=source)
    return file


def _add_parity(entries: list[dict], args: ExportArgs, out: Path, tokenizer, stops: set[int], log) -> None:
    """Each entry's "parity": its file in llama.cpp against the fused model in MLX (fp32), on the held-out data."""
    from .parity import greedy_prompts as first_prompts
    from .parity import held_out_texts

    log("parity in llama.cpp against the fused model (MLX, fp32) ...")
    texts = held_out_texts(args.parity_data, tokenizer, args.parity_texts, max_tokens=512)
    prompts = first_prompts(args.parity_data, tokenizer, args.greedy_prompts)
    reference = reference_outputs(args.source, texts, prompts, args.greedy_tokens, stops)
    for entry in entries:
        entry["parity"] = p = variant_parity(out / entry["file"], reference, texts, prompts, args.greedy_tokens, stops)
        log(
            f"      {entry['variant']}: top-1 {p['top1_agreement']}, KL {p['kl_mean']}, greedy identical "
            f"{p['greedy_identical_share']}, llama.cpp decode {p['llama_cpp_decode_tokens_per_s']} tok/s"
        )


def write_report(out: Path, report: dict) -> None:
    import llama_cpp

    from .parity import report_markdown

    report["machine"] += f", llama-cpp-python {llama_cpp.__version__}"
    (out / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    footer = f"Machine: {report['machine']}. Each `.Modelfile` is for Ollama: `ollama create NAME -f FILE.Modelfile`."
    compared = "in llama.cpp against the fused model in MLX (fp32)"
    speed = ("llama_cpp_decode_tokens_per_s", "llama.cpp decode tok/s")
    (out / "export.md").write_text(report_markdown(report, "GGUF export", compared, *speed, footer))
