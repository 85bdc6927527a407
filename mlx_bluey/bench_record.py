"""What every benchmark script writes: the command that made it, the machine it ran on, and its figures as
NAME.json beside a NAME.md a reader can take in, both written whole or not at all (atomic_write_text).

    record = {"command": command_line(), "machine": machine(), ...figures}
    write_record(out, "decode_profile", record, "# Where a decode step goes", table(header, rows))
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

from .atomic import atomic_write_text


def timed_training(config: str | Path, output: Path, steps: int, *flags: str) -> list[str]:
    """`mlx_bluey train` argv for a timed run: STEPS steps of CONFIG into OUTPUT (over any earlier run there),
    no validation, one checkpoint at the end, no progress bar; then FLAGS."""
    command = [sys.executable, "-m", "mlx_bluey.cli", "train", "--config", str(config), "--output", str(output)]
    command += ["--iters", str(steps), "--val-every", "0", "--save-every", str(steps), "--no-progress", "--overwrite"]
    return [*command, *flags]


def command_line() -> str:
    """The command as typed: `python scripts/NAME.py ARGS` (an argument with spaces quoted)."""
    return shlex.join(["python", *sys.argv])


def machine(blas: bool = True) -> dict:
    """Platform, CPUs, device and BLAS facts (runtime.machine_facts; the BLAS matmul GFLOP/s measured now).
    blas=False, for figures that do not come from this process's MLX or BLAS (the browser's WASM): the CPU."""
    from . import runtime

    if not blas:
        return {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": runtime.describe_cpu()}
    return runtime.machine_facts()


def describe_machine(facts: dict) -> str:
    """One line: 'Linux-...-x86_64, 2 CPUs, device cpu, BLAS OpenBLAS, kernel Zen (...), 140.2 GFLOP/s ...'
    (or, for a record without BLAS facts, 'Linux-...-x86_64, 2 CPUs, CPU AMD EPYC ..., 2 cores, avx2 fma ...')."""
    from . import runtime

    if "blas" not in facts:
        return f"{facts['platform']}, {facts['cpus']} CPUs, CPU {facts['cpu']}"
    return f"{facts['platform']}, {facts['cpus']} CPUs, device {facts['device']}, BLAS {runtime.describe_blas(facts)}"


def table(header: list[str], rows: list[list], align: str = "") -> str:
    """A Markdown table; `align` a character per column: 'r' right-aligns it (figures), anything else left."""
    rule = ["---:" if (align[i:i + 1] == "r") else "---" for i in range(len(header))]  # fmt: skip
    lines = [header, rule, *[[str(cell) for cell in row] for row in rows]]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)


def write_record(directory: Path, name: str, record: dict, title: str, body: str) -> str:
    """directory/NAME.json (the record) and directory/NAME.md: the title, the command, the machine, the body.
    Returns the Markdown."""
    directory.mkdir(parents=True, exist_ok=True)
    facts = record.get("machine")
    where = describe_machine(facts) if isinstance(facts, dict) else str(facts)
    markdown = f"{title}\n\n`{record['command']}`\n\nMachine: {where}.\n\n{body.rstrip()}\n"
    atomic_write_text(directory / f"{name}.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(directory / f"{name}.md", markdown)
    return markdown
