"""`mlx_bluey bench`: tokens/s across model sizes for prompt processing, decode and LoRA training.

    mlx_bluey bench                                   # embedded 270M and a 1B-shaped model, float32
    mlx_bluey bench --model gemma-3-1b-it --dtype float32 --dtype bfloat16 --dtype 4bit

Every figure is measured here, now: warm-up runs are excluded, each measurement is repeated and
reported as median with min and max. The machine's ceilings are measured first (float32 matmul
GFLOP/s and memory bandwidth), and each figure is set against them:
- training FLOP utilisation = 4 x parameters (head included) x trained tokens/s / matmul FLOP/s: per token
  2 x params for the forward and 2 x params for the gradient of the activations; LoRA's frozen
  weights get no weight gradient (the 2 x params of full fine-tuning), the adapters' share is <1%;
- decode bandwidth utilisation = bytes of weights read per token x decode tokens/s / bandwidth
  (about 100% means decode is bandwidth-bound; a little over 100% is the ceiling's own noise).
The "1b-shaped" model is Gemma 3 1B's configuration with random weights: right for speed and
memory, meaningless for text.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from . import runtime
from .bench_args import BenchArgs
from .decode_head import decoding_model
from .gemma3_shapes import GEMMA3_1B_CONFIG

ONE_B_SHAPED = "1b-shaped"


@dataclass
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class ModelResult:
    model: str
    dtype: str
    parameters: int
    weight_bytes: int
    load_seconds: float
    prompt_tokens_per_second: Spread
    decode_tokens_per_second: Spread
    train_tokens_per_second: Spread | None
    peak_memory_gb: dict = field(default_factory=dict)
    training_flop_utilisation: float | None = None
    decode_bandwidth_utilisation: float | None = None


def timed(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of fn, after `warmup` calls that are not timed."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_ms(fn, repeats: int) -> float:
    """Median milliseconds of `repeats` calls of fn after one warm-up call."""
    return 1000 * statistics.median(timed(fn, repeats))


def machine_ceilings(size: int = 2048, repeats: int = 3) -> dict:
    """float32 matmul GFLOP/s (size^3 multiply-adds) and memory bandwidth as decode sees it.

    Decode is a matrix-vector product per weight matrix, so bandwidth is measured the same way:
    a 16384 x 8192 float32 matrix (512 MiB, far past any cache) times a vector, bytes read / time,
    once by MLX (one thread on a CPU) and once by NumPy's BLAS (every core); the faster is the ceiling.
    (An MLX `sum` over a big array measured only 8 GB/s here: it runs on one core and is
    compute-bound, which made decode look like 180% of "bandwidth".)
    """
    a, b = mx.random.normal((size, size)), mx.random.normal((size, size))
    mx.eval(a, b)
    matmul = timed(lambda: mx.eval(a @ b), repeats)
    matrix, vector = mx.random.normal((16384, 8192)), mx.random.normal((8192, 1))
    mx.eval(matrix, vector)
    read = timed(lambda: mx.eval(matrix @ vector), repeats)
    matrix_np, vector_np = np.array(matrix, copy=False), np.array(vector)
    read_np = timed(lambda: matrix_np @ vector_np, repeats)  # BLAS sgemv, every core (the decode head's path)
    mlx_gbs, numpy_gbs = (matrix.nbytes / statistics.median(t) / 1e9 for t in (read, read_np))
    return {
        "matmul_gflops": 2 * size**3 / statistics.median(matmul) / 1e9,
        "memory_gb_per_second": max(mlx_gbs, numpy_gbs),  # the machine's: the faster of the two readers
        "mlx_gemv_gb_per_second": mlx_gbs,
        "numpy_gemv_gb_per_second": numpy_gbs,
        "device": runtime.device_name(),
        **runtime.blas_facts(measure=False),  # matmul_gflops above is the measurement (at 2048^3)
    }


def load_bench_model(name: str, dtype: str, log=print):
    """(model, label, load seconds) for a registry name, directory, or ONE_B_SHAPED."""
    from mlx_lm.utils import load_model

    from .models import resolve_model

    start = time.perf_counter()
    if name == ONE_B_SHAPED:
        from mlx_lm.models.gemma3_text import Model, ModelArgs

        model = Model(ModelArgs.from_dict(GEMMA3_1B_CONFIG))
        model.sanitize({})
    else:
        model, _ = load_model(resolve_model(name, log=log))
    if dtype == "4bit":
        model.set_dtype(mx.float32 if mx.default_device() == mx.cpu else mx.bfloat16)
        # mlx-lm's default group of 64 weights per scale; 32 where a row is too short (tiny test models)
        nn.quantize(model, group_size=64 if model.args.hidden_size % 64 == 0 else 32, bits=4)
    else:
        model.set_dtype(runtime.resolve_dtype(dtype))
    mx.eval(model.parameters())
    return model, time.perf_counter() - start


def _token_ids(model, seed: int, shape: tuple) -> np.ndarray:
    """Random ids inside the vocabulary (an id past it reads outside the embedding)."""
    return np.random.default_rng(seed).integers(0, model.args.vocab_size, shape).astype(np.int32)


def _prompt_speed(model, tokens: int, repeats: int) -> Spread:
    """Prompt tokens/s up to the first token's logits, as generation computes them (decode_head)."""
    from mlx_lm.models.cache import make_prompt_cache

    prompt = mx.array(_token_ids(model, 0, (1, tokens)))
    runner = decoding_model(model)

    def run():
        cache = make_prompt_cache(model)
        mx.eval(runner(prompt, cache=cache))

    return Spread.of([tokens / t for t in timed(run, repeats)])


def _decode_speed(model, prompt_tokens: int, new_tokens: int, repeats: int) -> Spread:
    from mlx_lm.generate import generate_step

    prompt = mx.array(_token_ids(model, 1, (prompt_tokens,)))
    speeds = []
    for i in range(repeats + 1):  # the first run warms up
        steps = generate_step(prompt, decoding_model(model), max_tokens=new_tokens + 1)
        next(steps)  # the first token includes the prompt: not decode
        start = time.perf_counter()
        for _ in steps:
            pass
        if i:
            speeds.append(new_tokens / (time.perf_counter() - start))
    return Spread.of(speeds)


def _train_speed(model, batch: int, length: int, repeats: int) -> Spread:
    """LoRA (rank 8, every linear of every block) steps with this project's loss; all positions supervised."""
    import mlx.optimizers as optim

    from .config import TrainConfig
    from .tuning import apply_adapters, make_loss

    apply_adapters(model, TrainConfig(lora_rank=8))
    loss_sum = make_loss(model, head_trainable=False)
    step = nn.value_and_grad(model, loss_sum)
    optimizer = optim.AdamW(learning_rate=1e-5)
    inputs = mx.array(_token_ids(model, 2, (batch, length)))
    positions = mx.arange(batch * length)

    def run():
        loss, grads = step(model, inputs, inputs, positions)
        optimizer.update(model, grads)
        mx.eval(loss, model.trainable_parameters(), optimizer.state)

    return Spread.of([batch * length / t for t in timed(run, repeats)])


def bench_model(name: str, dtype: str, ceilings: dict, args: BenchArgs, log=print) -> ModelResult:
    """Prompt, decode and (unless 4-bit) training tokens/s of one model in one dtype, with peak memory."""
    mx.reset_peak_memory()
    model, load_seconds = load_bench_model(name, dtype, log)
    parameters = sum(v.size for _, v in tree_flatten(model.parameters()))
    weight_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    peaks = {"load": mx.get_peak_memory() / 1e9}
    mx.reset_peak_memory()
    prompt = _prompt_speed(model, args.prompt_tokens, args.repeats)
    decode = _decode_speed(model, 16, args.new_tokens, args.repeats)
    peaks["generate"] = mx.get_peak_memory() / 1e9
    train = None
    if dtype != "4bit":  # QLoRA on a CPU measured ~1-3 GFLOP/s: not worth a run
        mx.reset_peak_memory()
        train = _train_speed(model, args.train_batch, args.train_length, args.repeats)
        peaks["train"] = mx.get_peak_memory() / 1e9
    shown_dtype = dtype if dtype == "4bit" else str(runtime.resolve_dtype(dtype)).rsplit(".", 1)[-1]
    result = ModelResult(name, shown_dtype, parameters, weight_bytes, load_seconds, prompt, decode, train, peaks)
    if train is not None:
        result.training_flop_utilisation = 4 * parameters * train.median / (ceilings["matmul_gflops"] * 1e9)
    result.decode_bandwidth_utilisation = weight_bytes * decode.median / (ceilings["memory_gb_per_second"] * 1e9)
    return result


def run(args: BenchArgs, log=print) -> str:
    """Every model in every dtype, against the machine's ceilings; writes args.output, returns the Markdown."""
    ceilings = machine_ceilings()
    results = []
    for name in args.models or ("embedded", ONE_B_SHAPED):
        for dtype in args.dtypes:
            log(f"measuring {name} ({dtype}) ...")
            results.append(bench_model(name, dtype, ceilings, args, log))
    write_outputs(Path(args.output), ceilings, results, args.command)
    return to_markdown(ceilings, results)


def to_markdown(ceilings: dict, results: list[ModelResult]) -> str:
    spread = lambda s: "n/a" if s is None else f"{s.median:.1f} ({s.low:.1f}-{s.high:.1f})"  # noqa: E731 (a one-line helper local to this function)
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731 (a one-line helper local to this function)
    blas = {k: v for k, v in ceilings.items() if k != "matmul_gflops"}  # the GFLOP/s follows, measured at 2048^3
    lines = [
        f"Machine: {ceilings['device']}, BLAS {runtime.describe_blas(blas)}; "
        f"float32 matmul {ceilings['matmul_gflops']:.1f} GFLOP/s, memory {ceilings['memory_gb_per_second']:.1f} GB/s "
        f"(matrix x vector: MLX {ceilings['mlx_gemv_gb_per_second']:.1f}, "
        f"NumPy/BLAS {ceilings['numpy_gemv_gb_per_second']:.1f}; measured now).",
        "",
        "| model | dtype | params | load s | prompt tok/s | decode tok/s | train tok/s | peak GB (gen/train) "
        "| train FLOP util | decode BW util |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        peak = f"{r.peak_memory_gb['generate']:.2f}/{r.peak_memory_gb.get('train', float('nan')):.2f}"
        lines.append(
            f"| {r.model} | {r.dtype} | {r.parameters / 1e6:.0f}M | {r.load_seconds:.1f} "
            f"| {spread(r.prompt_tokens_per_second)} | "
            f"{spread(r.decode_tokens_per_second)} | {spread(r.train_tokens_per_second)} | {peak} | "
            f"{pct(r.training_flop_utilisation)} | {pct(r.decode_bandwidth_utilisation)} |"
        )
    lines += [
        "",
        "Figures: median (min-max) over the repeats, warm-up excluded. Train = LoRA rank 8 on every linear, "
        "loss at every position; FLOP utilisation counts 4 x params per token (LoRA: no weight gradient).",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(output: Path, ceilings: dict, results: list[ModelResult], command: str) -> None:
    from dataclasses import asdict

    from .atomic import atomic_write_text

    output.mkdir(parents=True, exist_ok=True)
    data = {"command": command, "ceilings": ceilings, "results": [asdict(r) for r in results]}
    atomic_write_text(output / "bench.json", json.dumps(data, indent=2))
    atomic_write_text(output / "bench.md", f"# mlx_bluey bench\n\n`{command}`\n\n" + to_markdown(ceilings, results))
    _chart(output / "bench.png", results)


def _chart(png: Path, results: list[ModelResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.model}\n{r.dtype}" for r in results]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4))
    for axis, title, key in zip(
        axes,
        ["prompt tok/s", "decode tok/s", "train tok/s"],
        ["prompt_tokens_per_second", "decode_tokens_per_second", "train_tokens_per_second"],
    ):
        values = [getattr(r, key).median if getattr(r, key) else 0 for r in results]
        axis.bar(range(len(results)), values, color="#3b7dd8")
        axis.set_xticks(range(len(results)), labels, fontsize=7)
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
