"""The in-character classifier's held-out accuracy, written down: what `mlx_bluey evaluate` reports per run.

    .venv/bin/python scripts/check_classifier.py --data data/bluey --output reports/classifier-bluey

Trains on DATA/train.jsonl's replies against the train split of data/eval/assistant_replies.jsonl and
checks on DATA/test.jsonl's replies against its test split. Writes OUTPUT/classifier.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlx_bluey.bench_record import command_line, machine, table, write_record  # noqa: E402  (after the path)
from mlx_bluey.evaluate import assistant_texts  # noqa: E402  (after the path: the script runs from a checkout)
from mlx_bluey.in_character import train_and_check  # noqa: E402 (after the path, as above)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "bluey"))
    parser.add_argument("--assistant-replies", default=str(ROOT / "data" / "eval" / "assistant_replies.jsonl"))
    parser.add_argument("--output", default=str(ROOT / "reports" / "classifier-bluey"))
    args = parser.parse_args()
    data = Path(args.data)
    _, checked = train_and_check(
        assistant_texts(data / "train.jsonl"), assistant_texts(data / "test.jsonl"), args.assistant_replies
    )
    record = {"command": command_line(), "machine": machine(), **checked}
    rows = [
        ["the character's (test.jsonl)", checked["in_character_replies"], f"{checked['in_character_right']:.3f}"],
        ["generic assistant (test split)", checked["assistant_replies"], f"{checked['assistant_right']:.3f}"],
        ["balanced", "", f"**{checked['balanced']:.3f}**"],
    ]
    body = table(["held-out replies", "n", "classified right"], rows, align="lrr")
    text = write_record(Path(args.output), "classifier", record, "# In-character classifier, held out", body)
    print(text)


if __name__ == "__main__":
    main()
