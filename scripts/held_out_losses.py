"""Held-out loss of several adapters on the same reference conversations, side by side.

    .venv/bin/python scripts/held_out_losses.py --adapter adapters/bluey-270m-sft-system-half \\
        --adapter adapters/bluey-270m-sft-short --reference data/bluey/test.jsonl \\
        --reference data/bluey/test.jsonl:1-109 --output reports/held-out-short

`mlx_bluey evaluate` measures the loss on the test.jsonl of its day; when a split grows, two reports hold
losses on different conversations. This script measures each adapter on each reference (a file, or
`FILE:FIRST-LAST` for lines FIRST to LAST, 1-based, e.g. the lines a split had before `data split --keep`
added to it) with what evaluate uses: `evaluate.held_out_loss`, the adapter's trained system message first
(none for an adapter trained without one). Writes OUTPUT/held_out.json and OUTPUT/held_out.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlx_bluey.bench_record import command_line, machine, table, write_record  # noqa: E402  (after the path)
from mlx_bluey.evaluate import held_out_loss  # noqa: E402 (after the path, as above)
from mlx_bluey.generation import load_for_generation  # noqa: E402 (after the path, as above)
from mlx_bluey.system_message import trained_system  # noqa: E402 (after the path, as above)


def reference_file(spec: str, directory: Path) -> Path:
    """`FILE` as it is, or `FILE:FIRST-LAST` written out to a file of those lines."""
    path, _, lines = spec.partition(":")
    if not lines:
        return Path(path)
    first, _, last = lines.partition("-")
    chosen = Path(path).read_text().splitlines(keepends=True)[int(first) - 1 : int(last)]
    out = directory / f"{len(list(directory.iterdir()))}.jsonl"
    out.write_text("".join(chosen))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", action="append", required=True, help="repeat for each adapter")
    parser.add_argument("--reference", action="append", required=True, help="FILE or FILE:FIRST-LAST; repeat")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        files = {spec: reference_file(spec, Path(scratch)) for spec in args.reference}
        for adapter in args.adapter:
            model, tokenizer, _ = load_for_generation(None, adapter, log=lambda _: None)
            model.eval()
            system = trained_system(adapter)
            results[adapter] = {
                spec: held_out_loss(model, tokenizer, path, system=system) for spec, path in files.items()
            }
            print(adapter, {spec: round(r["loss"], 4) for spec, r in results[adapter].items()}, flush=True)
    header = ["adapter", *(f"`{spec}` ({results[args.adapter[0]][spec]['tokens']} tokens)" for spec in args.reference)]
    rows = [[f"`{adapter}`", *(f"{r[spec]['loss']:.3f}" for spec in args.reference)] for adapter, r in results.items()]
    record = {"command": command_line(), "machine": machine(), "results": results}
    text = write_record(
        Path(args.output),
        "held_out",
        record,
        "# Held-out loss (nats per reply token)",
        "Each adapter with its trained system message (if any) before every conversation, as evaluate measures.\n\n"
        + table(header, rows, "l" + "r" * len(args.reference)),
    )
    print(text)


if __name__ == "__main__":
    main()
