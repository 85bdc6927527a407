"""Reading the project's YAML files (configs, character cards) with errors that name file, line and key.

`wrong_type` checks a value against a dataclass field's annotation, for the config and the card alike.
"""

from __future__ import annotations

import codecs
import re
import types
import typing
from pathlib import Path

import yaml

# PyYAML follows YAML 1.1, where 1e-4 (no dot, no exponent sign) is the string "1e-4"; YAML 1.2 and
# every other parser read a number, and so do we.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """yaml.safe_load's loader, reading 1e-4 as a float."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def read_yaml_mapping(path: Path, known_keys: list[str], error: type[Exception], what: str) -> dict:
    """The file's mapping; `error` naming the file (and line and key) for anything that cannot be used."""
    loader, root = _compose(_read_text(path, error, what), path, error)
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise error(f"{path}: expected a mapping of keys to values")
    data: dict = {}
    lines: dict[str, int] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        key = _construct(loader, key_node, f"{path}:{line}", error)
        if not isinstance(key, str) or not key.strip() or _text_problem(key):
            raise error(f"{path}:{line}: a key must be a name, not {short_repr(key)}")
        if key in lines:
            raise error(f"{path}:{line}:{key}: given twice (also on line {lines[key]}); keep one")
        lines[key] = line
        data[key] = _construct(loader, value_node, f"{path}:{line}:{key}", error)
        if problem := _text_problem(data[key]):
            raise error(f"{path}:{line}:{key}: {problem}")
    unknown = [key if key.isidentifier() else short_repr(key) for key in sorted(set(data) - set(known_keys))]
    if unknown:
        raise error(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known_keys)}")
    return data


def _read_text(path: Path, error: type[Exception], what: str) -> str:
    if not path.exists():
        raise error(f"{path}: {what} not found")
    try:
        data = path.read_bytes()
    except OSError as problem:
        raise error(f"{path}: cannot read the {what}: {problem.strerror or problem}") from problem
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as problem:
        line_start = data.rfind(b"\n", 0, problem.start) + 1
        line = data.count(b"\n", 0, problem.start) + 1
        raise error(f"{path}:{line}: not valid UTF-8 (byte {problem.start - line_start} of the line)") from problem


def _compose(text: str, path: Path, error: type[Exception]):
    """The loader and the document's root node (None for an empty document)."""
    try:
        loader = _Loader(text)
        return loader, loader.get_single_node()
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML: {problem}") from problem
    except RecursionError as problem:
        raise error(f"{path}: not valid YAML: nested too deeply") from problem


def _construct(loader: _Loader, node, where: str, error: type[Exception]):
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as problem:
        raise error(f"{where}: not valid YAML: {problem}") from problem
    except (ValueError, RecursionError) as problem:  # a date like 2020-13-45, an integer of 5000 digits
        raise error(f"{where}: cannot read this value: {str(problem).split(';')[0]}") from problem


def _text_problem(value) -> str | None:
    """Why a string in the value cannot be a name, path or text (YAML escapes can write "\\0" or "\\ud800")."""
    if isinstance(value, str):
        if "\0" in value:
            return "contains a NUL character (\\0)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as problem:
            return f"contains a lone surrogate \\u{ord(value[problem.start]):04x} (not valid Unicode)"
    elif isinstance(value, (list, tuple, set, frozenset)):
        return next(filter(None, map(_text_problem, value)), None)
    elif isinstance(value, dict):
        return next(filter(None, map(_text_problem, [*value, *value.values()])), None)
    return None


def wrong_type(hint, value) -> str | None:
    """None when `value` fits the annotation `hint`, else what was expected, e.g. "a list of strings or null".

    An int fits a float field; a bool fits only a bool field, although Python counts it as an int.
    """
    return None if _fits(hint, value) else _describe(hint)


def _fits(hint, value) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(arg, value) for arg in typing.get_args(hint))
    if origin is list:
        return isinstance(value, list) and all(_fits(typing.get_args(hint)[0], item) for item in value)
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is list:
        return "a list of " + _describe(typing.get_args(hint)[0]).split(" ", 1)[1] + "s"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def short_repr(value, limit: int = 60) -> str:
    """repr for a message: cut to `limit` characters (a bad value may be a megabyte of text)."""
    try:
        text = repr(value)
    except ValueError:  # an int of over 4300 digits cannot be written in decimal
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else text[: limit - 3] + "..."
