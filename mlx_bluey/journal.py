"""A run's results as they come, one JSON record per line after a header that names the run, so an
interrupted run (Ctrl-C, a killed process) continues where it stopped: `data pairs` and `evaluate`.

    journal = Journal(path, {"data": "...", "seed": 0})   # reads what an interrupted run left
    for key in work:
        if key not in journal.done(...): journal.append(record)
    journal.finish()                                       # the caller wrote its output; the journal goes

A line cut by a kill is dropped (the record is made again); a journal of another run (its header differs)
is an error that names the file, never silently reused or overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from .atomic import atomic_write_text
from .data import DataError


class Journal:
    def __init__(self, path: Path, header: dict):
        self.path, self.header = Path(path), header
        self.records: list[dict] = self._read() if self.path.exists() else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by finish() or close())
        if not self.path.stat().st_size:  # a fresh start (or a file killed before its header was whole)
            self._write({"header": header})

    def _read(self) -> list[dict]:
        text = self.path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # killed mid-line: drop the unfinished record, keep the rest
            text = text[: text.rfind("\n") + 1]
            atomic_write_text(self.path, text)
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not lines:
            return []
        if lines[0].get("header") != self.header:
            raise DataError(
                str(self.path), f"an interrupted run with other settings: delete it to start again ({self.path})"
            )
        return lines[1:]

    def _write(self, record: dict) -> None:
        self._sink.write(json.dumps(record) + "\n")
        self._sink.flush()

    def append(self, record: dict) -> None:
        self._write(record)
        self.records.append(record)

    def close(self) -> None:
        self._sink.close()

    def finish(self) -> None:
        """The run is complete and its output written: the journal is no longer needed."""
        self.close()
        self.path.unlink()
