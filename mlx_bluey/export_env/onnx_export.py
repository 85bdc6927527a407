"""The export worker: fused Hugging Face directory -> Optimum ONNX -> browser variants, with parity.

Runs in the export environment (`make export-env`: torch 2.13.0 CPU, optimum-onnx, onnxruntime), which
cannot share one with mlx-lm (optimum-onnx pins transformers < 4.58, mlx-lm needs >= 5.7). The
`mlx_bluey export` command starts it as `python -m mlx_bluey.export_env.onnx_export ARGS_JSON` (an
ExportArgs, export_args.py). The parity harness is parity_harness.py, the graph rewrites onnx_graph.py.

Output, in the layout Transformers.js reads:

    OUTPUT/config.json generation_config.json tokenizer.json tokenizer_config.json (+ chat template)
    OUTPUT/onnx/model_quantized.onnx   q8: 8-bit weights (MatMulNBits, block 128), fast in native onnxruntime
    OUTPUT/onnx/model_q4.onnx          q4: 4-bit weights (block 32), the tied head/embedding at 8 bits
    OUTPUT/onnx/model_int8.onnx        int8: 8-bit weights onnxruntime turns into fp32 at load
    OUTPUT/onnx/model_vocab_int8.onnx  int8-vocab: int8 with the output head cut to the character's token ids
                                       (with --vocabulary-data; onnx_vocab.py)
    OUTPUT/onnx/model_fp16.onnx        fp16 weights and activations (WebGPU)
    OUTPUT/export.json, export.md      size and parity of every variant

Every variant stores the tied embedding once (onnx_graph.py). The fp32 ONNX is an intermediate,
kept only with --keep-fp32. The directory is built under a temporary name and renamed at the end.
"""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_directory
from ..export_args import VOCAB_VARIANT, ExportArgs
from ..parity import greedy_prompts as first_prompts
from ..parity import held_out_texts, report_markdown
from .parity_harness import reference_outputs, variant_parity

TWO_GB = 2**31 - 1  # protobuf's limit for one file; larger graphs keep their weights in FILE_data


@dataclass(frozen=True)
class Variant:
    name: str
    file: str  # under onnx/: Transformers.js loads MODEL_FILE_NAME + its dtype's suffix (q8: "_quantized")
    kind: str  # "nbits", "int8" (dequantized at load), "fp16" (or "fp32", the reference)
    dtype: str  # the Transformers.js dtype the page asks for
    model_file_name: str = "model"  # Transformers.js' model_file_name option
    vocabulary: bool = False  # the output head keeps the ids of ExportArgs.vocabulary_data only (onnx_vocab.py)
    bits: int = 0
    block_size: int = 0
    accuracy_level: int = 0  # MatMulNBits: 0 = unset (fp32 compute); 4 = int8 compute
    head_bits: int = 0  # 0: the tied head/embedding as the rest; else its own bits (block 128)


VARIANTS = {
    # 8 bits, block 128: 268M bytes + 268M/128 scales x 4 bytes = 276 MB for the 270M.
    # accuracy_level 4: onnxruntime's CPU MatMulNBits runs 8-bit weights with int8 compute.
    "q8": Variant("q8", "model_quantized.onnx", "nbits", "q8", bits=8, block_size=128, accuracy_level=4),
    # 4 bits, block 32, for the 100M parameters of the blocks; the tied head/embedding (168M) stays at
    # 8 bits: all-4-bit measured KL 0.61 against the fused model (top-1 0.62), too lossy for a 270M.
    # 100M x (1/2 + 4/32) + 168M x (1 + 4/128) = 63 + 173 = ~236 MB for the 270M.
    "q4": Variant("q4", "model_q4.onnx", "nbits", "q4", bits=4, block_size=32, head_bits=8),
    # int8 per output column behind DequantizeLinear, folded to fp32 when the session is created with
    # onnx_graph.FOLD_AT_LOAD (export.json's session_config, which the page passes): 268M bytes + one fp32
    # scale per column = ~271 MB to download, ~1.07 GB of fp32 weights in the session for the 270M.
    "int8": Variant("int8", "model_int8.onnx", "int8", "int8", bits=8),
    # int8 with the head's 262,144 columns cut to the ids the character uses (onnx_vocab.py; 26,270 for Bluey,
    # benchmarks/export-270m): the lookup reads the whole int8 table; the kept head columns are gathered from
    # it and folded at load, so the file is int8's plus the kept ids.
    VOCAB_VARIANT: Variant(
        VOCAB_VARIANT, "model_vocab_int8.onnx", "int8", "int8", "model_vocab", bits=8, vocabulary=True
    ),
    "fp16": Variant("fp16", "model_fp16.onnx", "fp16", "fp16"),
    "fp32": Variant("fp32", "model.onnx", "fp32", "fp32"),
}
COPIED = (
    "character.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "GEMMA_TERMS.html",
    "NOTICE.md",
    "LICENSE",
    "USE_POLICY.md",
)


def log(message: str) -> None:
    print(message, flush=True)


@contextmanager
def ticking(label: str, every: float = 15.0):
    """A line every `every` seconds while a long step without its own progress runs (Optimum, quantizers)."""
    stop = threading.Event()
    started = time.perf_counter()

    def tick() -> None:
        while not stop.wait(every):
            log(f"      {label}: {time.perf_counter() - started:.0f} s so far...")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def export_fp32(fused: Path, work: Path) -> Path:
    """Optimum's `text-generation-with-past` export (fp32, opset 18); returns the model.onnx path."""
    from optimum.exporters.onnx import main_export

    main_export(
        str(fused),
        output=str(work),
        task="text-generation-with-past",
        opset=18,
        device="cpu",
        do_validation=False,  # parity is measured below, against the fused model itself
        no_post_process=True,
    )  # its tied-weight clean-up fails over 2 GB (1B); onnx_graph ties instead
    return work / "model.onnx"


def save(model, path: Path) -> None:
    import onnx

    weights = sum(len(init.raw_data) for init in model.graph.initializer)
    if weights > TWO_GB - 2**26:  # leave room for the graph itself
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + "_data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))


def quantize_nbits(model, bits: int, block_size: int, accuracy_level: int, exclude=None):
    """Symmetric block-wise weight-only quantization of MatMuls (onnxruntime's MatMulNBits)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size,
        is_symmetric=True,
        bits=bits,
        accuracy_level=accuracy_level or None,
        op_types_to_quantize=("MatMul",),
    )
    quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=exclude)
    quantizer.process()
    return quantizer.model.model


def make_variant(fp32_path: Path, variant: Variant, out_dir: Path, keep_ids: Path | None = None) -> dict:
    """Write one variant (run in its own process: the 1B's quantizers need all the memory they can get).
    keep_ids: a JSON list of the token ids a vocabulary variant keeps."""
    import numpy as np
    import onnx

    from .onnx_graph import FOLD_AT_LOAD, dequantize_at_load, find_tied, tie_float, tie_nbits
    from .onnx_vocab import prune_vocabulary

    started = time.perf_counter()
    model = onnx.load(str(fp32_path))
    if variant.kind == "nbits":
        head = find_tied(model).head.name
        if variant.head_bits:
            model = quantize_nbits(model, variant.bits, variant.block_size, variant.accuracy_level, exclude=[head])
            # the head is now the only MatMul left with a constant weight (the others are MatMulNBits).
            # 8 bits needs accuracy_level 4 (int8 compute) to be fast: at level 0 onnxruntime's CPU decode fell
            # from 77 to 2.85 tok/s with this head.
            model = quantize_nbits(
                model, variant.head_bits, 128, 4 if variant.head_bits == 8 else variant.accuracy_level
            )
        else:
            model = quantize_nbits(model, variant.bits, variant.block_size, variant.accuracy_level)
        saved = tie_nbits(model)
    elif variant.kind == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        saved = tie_float(model)
        # keep_io_types=False: the KV cache travels in fp16 too (Transformers.js reads the input types)
        model = convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=True)
    elif variant.kind == "int8":
        saved = tie_float(model)
        dequantize_at_load(model)
        if variant.vocabulary:
            kept = prune_vocabulary(model, np.array(json.loads(keep_ids.read_text()), dtype=np.int64))
    else:
        saved = tie_float(model)
    path = out_dir / variant.file
    save(model, path)
    size = sum(p.stat().st_size for p in out_dir.glob(variant.file + "*"))
    return {
        "variant": variant.name,
        "file": f"onnx/{variant.file}",
        "bytes": size,
        "mb": round(size / 1e6, 1),
        "external_data": (out_dir / (variant.file + "_data")).exists(),
        "tied_bytes_saved": saved,
        "seconds": round(time.perf_counter() - started, 1),
        "dtype": variant.dtype,
        "model_file_name": variant.model_file_name,
        **{k: v for k, v in asdict(variant).items() if k in ("bits", "block_size", "accuracy_level", "head_bits")},
        **({"session_config": FOLD_AT_LOAD} if variant.kind == "int8" else {}),
        **({"kept_ids": kept} if variant.vocabulary else {}),
    }


# ---------------------------------------------------------------------------------------------- pipeline


def write_report(out: Path, report: dict) -> None:
    (out / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    compared = "(onnxruntime, CPU) against the fused model loaded by transformers in fp32"
    footer = f"Export (fp32 ONNX): {report['export_seconds']} s. Machine: {report['machine']}."
    text = report_markdown(report, "ONNX export", compared, "ort_decode_tokens_per_s", "ORT decode tok/s", footer)
    (out / "export.md").write_text(text)


def run(args: ExportArgs) -> dict:
    """Every variant of args.source into args.output (under a temporary name), with the size and parity report."""
    import os
    import platform

    import onnxruntime

    fused, output, variants = args.source, args.output, args.chosen_variants()
    for name in variants:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}: choose from {', '.join(VARIANTS)}")
    if not (fused / "config.json").exists():
        raise SystemExit(f"{fused}: not a model directory (no config.json); run `mlx_bluey fuse` first")
    vocabulary = [name for name in variants if VARIANTS[name].vocabulary]
    if vocabulary and args.vocabulary_data is None:
        raise SystemExit(f"variant {vocabulary[0]} needs --vocabulary-data (the character's training JSONL)")
    report = {
        "fused": str(fused),
        "command": args.command,
        "variants": [],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, onnxruntime {onnxruntime.__version__}",
    }
    with atomic_directory(output) as out:
        onnx_dir = out / "onnx"
        onnx_dir.mkdir()
        fp32_dir = out / ".fp32"
        log(f"[1/3] exporting {fused} to ONNX with Optimum (text-generation-with-past, fp32)...")
        started = time.perf_counter()
        with ticking("Optimum export"):
            fp32 = export_fp32(fused, fp32_dir)
        report["export_seconds"] = round(time.perf_counter() - started, 1)
        log(f"      done in {report['export_seconds']} s")
        for name in COPIED:
            if (fused / name).exists():
                shutil.copy(fused / name, out / name)
        keep_ids = _vocabulary_ids(args, fp32_dir) if vocabulary else None
        report["variants"] = [
            _variant_in_a_process(name, fp32, onnx_dir, i, len(variants), keep_ids) for i, name in enumerate(variants)
        ]
        if args.parity_data is not None and args.parity_texts > 0:
            _add_parity(report["variants"], args, onnx_dir)
        report.update(
            vocabulary_data=None if args.vocabulary_data is None else str(args.vocabulary_data),
            vocabulary_common=args.vocabulary_common,
            parity_source=str(args.parity_data),
            parity_texts=args.parity_texts,
            greedy_prompts=args.greedy_prompts,
            greedy_tokens=args.greedy_tokens,
        )
        if args.keep_fp32 and "fp32" not in variants:
            shutil.copy(fp32, onnx_dir / "model.onnx")
            for data in fp32_dir.glob("model.onnx_data"):
                shutil.copy(data, onnx_dir / data.name)
        shutil.rmtree(fp32_dir)
        write_report(out, report)
    return report


def _stop_ids(fused: Path) -> list[int]:
    """generation_config.json's eos_token_id as a list (Gemma 3 from `mlx_bluey fuse`: [1, 106])."""
    eos = json.loads((fused / "generation_config.json").read_text())["eos_token_id"]
    return eos if isinstance(eos, list) else [eos]


def _vocabulary_ids(args: ExportArgs, work: Path) -> Path:
    """The ids a vocabulary variant keeps (onnx_vocab.vocabulary_ids), as a JSON file in the work directory."""
    from transformers import AutoTokenizer

    from .onnx_vocab import vocabulary_ids

    tokenizer = AutoTokenizer.from_pretrained(str(args.source))
    try:
        ids = vocabulary_ids(tokenizer, args.vocabulary_data, args.vocabulary_common, _stop_ids(args.source))
    except ValueError as error:
        raise SystemExit(str(error)) from error
    log(f"      vocabulary: {len(ids)} of {len(tokenizer)} token ids kept ({args.vocabulary_data})")
    path = work / "vocabulary_ids.json"
    path.write_text(json.dumps(ids.tolist()))
    return path


def _variant_in_a_process(
    name: str, fp32: Path, onnx_dir: Path, index: int, count: int, keep_ids: Path | None = None
) -> dict:
    """make_variant in a child process (main's --variant-only), so each quantizer starts with all the memory."""
    log(f"[2/3] variant {name} ({index + 1}/{count})...")
    command = [sys.executable, "-m", __spec__.name, "--variant-only", name, str(fp32), str(onnx_dir)]
    with ticking(f"variant {name}"):
        result = subprocess.run(command + ([str(keep_ids)] if keep_ids else []), capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"variant {name} failed:\n{result.stderr[-4000:]}")
    entry = json.loads(result.stdout.strip().splitlines()[-1])
    log(f"      {entry['file']}: {entry['mb']} MB in {entry['seconds']} s")
    return entry


def _add_parity(entries: list[dict], args: ExportArgs, onnx_dir: Path) -> None:
    """Each entry's "parity": its variant against the fused model (transformers, fp32) on the held-out data."""
    from transformers import AutoTokenizer

    log("[3/3] parity against the fused model (transformers, fp32)...")
    fused = args.source
    tokenizer = AutoTokenizer.from_pretrained(str(fused))
    stops = set(_stop_ids(fused))
    texts = held_out_texts(args.parity_data, tokenizer, args.parity_texts, max_tokens=512)
    prompts = first_prompts(args.parity_data, tokenizer, args.greedy_prompts)
    with ticking("reference logits and greedy tokens (transformers)"):
        reference = reference_outputs(fused, texts, prompts, args.greedy_tokens, stops)
    for entry in entries:
        path = onnx_dir / VARIANTS[entry["variant"]].file
        config = entry.get("session_config")
        entry["parity"] = parity = variant_parity(path, reference, texts, prompts, args.greedy_tokens, stops, config)
        log(
            f"      {entry['variant']}: top-1 {parity['top1_agreement']}, KL {parity['kl_mean']}, "
            f"greedy identical {parity['greedy_identical_share']}, "
            f"ORT decode {parity['ort_decode_tokens_per_s']} tok/s"
        )
        gc.collect()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--variant-only"]:  # internal (run above): one variant per process, FP32_ONNX ONNX_DIR [IDS]
        name, fp32, onnx_dir = argv[1:4]
        keep_ids = Path(argv[4]) if len(argv) > 4 else None
        print(json.dumps(make_variant(Path(fp32), VARIANTS[name], Path(onnx_dir), keep_ids)))
        return
    if len(argv) != 1:
        raise SystemExit(f"usage: python -m {__spec__.name} ARGS_JSON (an ExportArgs; `mlx_bluey export` writes it)")
    run(ExportArgs.from_json(argv[0]))


if __name__ == "__main__":
    main()
