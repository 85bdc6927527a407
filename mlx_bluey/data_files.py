"""The data a command falls back on outside a checkout (a wheel installed anywhere): the evaluation set
(data/eval) and the Bluey dataset with its card (data/bluey) travel inside the package as
mlx_bluey/bundled_data, a link to ../data in the checkout that a wheel build copies (pyproject's package data).

A default such as `data/eval/prompts.jsonl` means the working directory's file when there is one (a checkout,
or a user's own project laid out the same way), else the package's copy.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED = Path(__file__).parent / "bundled_data"


def located(path: str | Path) -> Path:
    """`path` itself when it exists, is absolute or lies outside data/; else the package's copy of it, if any."""
    path = Path(path)
    if path.exists() or path.is_absolute() or path.parts[:1] != ("data",):
        return path
    bundled = BUNDLED.joinpath(*path.parts[1:])
    return bundled if bundled.exists() else path
