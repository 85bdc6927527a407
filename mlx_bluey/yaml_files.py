"""Reading the project's YAML files (configs, character cards) with errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_yaml_mapping(path: Path, known_keys: list[str], error: type[Exception], what: str) -> dict:
    """The file's mapping; `error` with the file name for a missing file, bad YAML or unknown keys."""
    if not path.exists():
        raise error(f"{path}: {what} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML: {problem}") from problem
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of keys to values")
    unknown = sorted(set(data) - set(known_keys))
    if unknown:
        raise error(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known_keys)}")
    return data
