"""OpenBLAS kernels side by side: float32 matmul GFLOP/s and `make train`'s seconds per step under each.

    .venv/bin/python scripts/bench_blas_kernels.py --rounds 3 --steps 4

Each kernel runs in its own process with OPENBLAS_CORETYPE set (OpenBLAS reads it when it loads),
in alternating order each round so drift in the machine hits every kernel. Kernels: Prescott (the
generic fallback OpenBLAS 0.3.21 picks on CPUs it does not know), what OpenBLAS detects here, and each
kernel of mlx_bluey/openblas.py this CPU can run. Per kernel and round: MLX's 1024^3 float32 matmul
(runtime.matmul_gflops) and `mlx_bluey train --config configs/bluey.yaml --iters STEPS` on the embedded
270M (the median of steps 2.., the first carries one-off work). Ratios against Prescott are paired per
round. Results: benchmarks/blas_kernels.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlx_bluey import openblas, runtime  # noqa: E402  (after the path: the script runs from a checkout)
from mlx_bluey.bench_record import command_line, machine, timed_training, write_record  # noqa: E402  (as above)

GFLOPS = "from mlx_bluey import runtime; runtime.ensure_fast_blas(); print(runtime.matmul_gflops())"


def kernel_env(kernel: str | None) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLX_BLUEY_BLAS_CHECKED", "OPENBLAS_CORETYPE", openblas.CHOSEN_FROM_ENV)
    }
    if kernel:
        env["OPENBLAS_CORETYPE"] = kernel
    return env


def measure(kernel: str, steps: int, work: Path) -> dict:
    env = kernel_env(kernel)
    gflops = float(
        subprocess.run(
            [sys.executable, "-c", GFLOPS], env=env, check=True, capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
    )
    result = {"matmul_gflops": gflops}
    if steps:
        output = work / kernel
        subprocess.run(
            timed_training("configs/bluey.yaml", output, steps),
            env=env,
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
        manifest = json.loads((output / "manifest.json").read_text())
        assert manifest["runtime"]["kernel"] == kernel, manifest["runtime"]
        result["seconds_per_step"] = statistics.median(r["seconds"] for r in rows[1:])
        result["losses"] = [r["train_loss"] for r in rows]
    return result


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="training steps per run; 0 = matmul only")
    parser.add_argument("--output", default=str(ROOT / "benchmarks"))
    args = parser.parse_args()
    library = runtime.find_openblas()
    if library is None:
        sys.exit("bench_blas_kernels: no OpenBLAS installed (make setup installs it)")
    detected = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from mlx_bluey import openblas; import json; print(json.dumps(openblas.loaded_kernel({library!r})))",
            ],
            env=kernel_env(None),
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
    )
    flags = openblas.cpu_flags()
    kernels = ["Prescott"] + [k for k, needs in openblas.KERNELS if needs <= flags]
    work = Path(tempfile.mkdtemp(prefix="bench-blas-"))
    rounds = []
    for index in range(args.rounds):
        order = kernels if index % 2 == 0 else kernels[::-1]
        rounds.append({kernel: measure(kernel, args.steps, work) for kernel in order})
        print(
            f"round {index + 1}: "
            + ", ".join(
                f"{k} {v['matmul_gflops']:.1f} GFLOP/s" + (f" {v['seconds_per_step']:.2f} s/step" if args.steps else "")
                for k, v in rounds[-1].items()
            ),
            file=sys.stderr,
        )
    # the machine without the detected kernel's facts: every kernel is measured below
    facts = {k: v for k, v in machine().items() if k not in ("kernel", "kernel_source", "matmul_gflops")}
    summary = {
        "command": command_line(),
        "machine": facts,
        "detected_by_openblas": detected,
        "kernels": kernels,
        "steps": args.steps,
        "rounds": rounds,
    }
    lines = [
        f"OpenBLAS detects **{detected}** here. {args.rounds} rounds, kernels alternating; median (min-max); "
        "ratios paired per round.\n",
        "| kernel | matmul GFLOP/s | x Prescott |"
        + (" s/step (make train config) | Prescott s/step / this |" if args.steps else ""),
        "|---|---|---|" + ("---|---|" if args.steps else ""),
    ]
    for kernel in kernels:
        gflops = [r[kernel]["matmul_gflops"] for r in rounds]
        ratio = [r[kernel]["matmul_gflops"] / r["Prescott"]["matmul_gflops"] for r in rounds]
        row = f"| {kernel} | {spread(gflops)} | {spread(ratio)} |"
        if args.steps:
            seconds = [r[kernel]["seconds_per_step"] for r in rounds]
            speedup = [r["Prescott"]["seconds_per_step"] / r[kernel]["seconds_per_step"] for r in rounds]
            row += f" {spread(seconds)} | {spread(speedup)} |"
        lines.append(row)
    if args.steps:
        reference = rounds[0]["Prescott"]["losses"]
        gap = max(abs(a - b) for r in rounds for k in kernels for a, b in zip(r[k]["losses"], reference))
        lines += [
            "",
            f"Training losses of steps 1-{args.steps} on Prescott: "
            + ", ".join(f"{x:.4f}" for x in reference)
            + f"; the largest difference of any kernel and round from these: {gap:.1e}.",
        ]
    title = "# OpenBLAS kernels side by side"
    print(write_record(Path(args.output), "blas_kernels", summary, title, "\n".join(lines)))


if __name__ == "__main__":
    main()
