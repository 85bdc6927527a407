"""Bad input, tried systematically: every loader either loads a file or raises the project's own error
naming the file (and, for JSONL, the line and field) - never a bare TypeError, UnicodeDecodeError...

Hypothesis starts from valid rows, cards and configs and breaks them a little (drops a key, swaps a
type, inserts control characters or a lone surrogate, cuts or corrupts bytes, adds a BOM), so most
examples are near-valid rather than garbage. The runs are derandomized: CI sees the same examples.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mlx_bluey.character import CardError, load_card
from mlx_bluey.config import ConfigError, TrainConfig, config_keys, load_config
from mlx_bluey.data import DataError, read_jsonl
from mlx_bluey.data_validate import validate_files
from mlx_bluey.evaluate import read_prompts
from mlx_bluey.yaml_files import wrong_type

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------ values and mutations

ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\x01",
        "\x1b[31m",
        "\t",
        "\r",
        "\n",
        "\u2028",
        "\x85",
        "\ufeff",
        "\ud800",
        "\udfff",
        "\ufffe",
        "<end_of_turn>",
        "é",
        "🙂",
        "null",
        "1e999",
        "2020-13-45",
        "!!python/object:os.system",
        "- x",
        "{",
    ]
) | st.integers(1000, 5000).map("a".__mul__)
TEXT = st.one_of(
    st.text(max_size=12), ODD_TEXT, st.lists(st.one_of(st.text(max_size=4), ODD_TEXT), max_size=4).map("".join)
)
NUMBERS = st.one_of(
    st.integers(), st.floats(), st.sampled_from([0, -1, 2**31, 10**30, -(10**30), 10**400, 1e300, -1e300])
)
# What json.dumps and yaml.safe_dump cannot write: a marker string in the value, swapped for the raw text.
RAW_JSON = [
    "9" * 5000,
    "-" + "9" * 5000,
    "[" * 3000 + "]" * 3000,
    '"\\ud800"',
    '"x\\udc80"',
    "1e99999",
    "NaN",
    "-Infinity",
    '"\x01"',
    '"\\x"',
    "{}",
    '{"role": "user"}',
    "tru",
    '"a" "b"',
]
RAW_YAML = [
    "9" * 5000,
    "2020-13-45",
    "!!python/object:os.system x",
    "*nowhere",
    "&a [*a]",
    "[" * 3000,
    '"\\ud800"',
    '"a\\0b"',
    "!!binary ???",
    "!!float abc",
    "1e-4",
    ".nan",
    "-.inf",
    "0x1F",
    "~",
    "yes",
    "!!set {a, b}",
    "2001-12-14t21:59:43.10-05:00",
    "{a: [b, {c: d}]}",
    "|\n  block",
]
RAW = st.integers(0, 99).map("\0RAW:{}".format)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, RAW)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6
)
PHRASES = st.one_of(
    st.sampled_from(["hi", "G'day!", "Wanna play Keepy Uppy?", "Hooray! Bingo's here!"]),
    st.text(min_size=1, max_size=20),
)


def _mutate(draw, value, keys=VALUES):
    """`value` with one change somewhere inside it: the near-misses a hand-edited file has."""
    if isinstance(value, (dict, list)) and value:
        action = draw(st.sampled_from(["descend"] * 4 + ["drop", "add", "retype"]))
    elif isinstance(value, str):
        action = draw(st.sampled_from(["insert", "insert", "retype"]))
    else:
        action = "retype"
    if action == "retype":
        return draw(VALUES)
    if isinstance(value, str):
        i = draw(st.integers(0, len(value)))
        return value[:i] + draw(ODD_TEXT) + value[i:]
    if isinstance(value, dict):
        key = draw(st.sampled_from(sorted(value, key=repr)))
        changed = dict(value)
        if action == "descend":
            changed[key] = _mutate(draw, value[key], keys)
        elif action == "drop":
            del changed[key]
        else:
            changed[draw(keys)] = draw(VALUES)
        return changed
    i = draw(st.integers(0, len(value) - 1))
    if action == "descend":
        return [*value[:i], _mutate(draw, value[i], keys), *value[i + 1 :]]
    if action == "drop":
        return value[:i] + value[i + 1 :]
    return [*value[:i], draw(VALUES), *value[i:]]


@st.composite
def mutated(draw, value, keys=VALUES):
    for _ in range(draw(st.integers(0, 3))):
        value = _mutate(draw, value, keys)
    return value


@st.composite
def corrupted(draw, data: bytes) -> bytes:
    """File bytes after a few of what editors, transfers and disks do: BOM, CRLF, cuts, stray bytes."""
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["bom", "crlf", "truncate", "insert", "flip", "long_line", "empty"]))
        i = draw(st.integers(0, len(data)))
        if action == "bom":
            data = codecs.BOM_UTF8 + data
        elif action == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif action == "truncate":
            data = data[:i]
        elif action == "insert":
            data = data[:i] + draw(st.binary(min_size=1, max_size=4)) + data[i:]
        elif action == "flip" and i < len(data):
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
        elif action == "long_line":
            data = data[:i] + b"x" * 100_000 + data[i:]
        elif action == "empty":
            data = b""
    return data


def _json_line(draw, row) -> bytes:
    text = json.dumps(row, ensure_ascii=draw(st.booleans()))
    text = re.sub(r'"\\u0000RAW:(\d+)"', lambda m: RAW_JSON[int(m[1]) % len(RAW_JSON)], text)
    return text.encode("utf-8", "surrogatepass")  # a raw surrogate is invalid UTF-8, as in a badly converted file


@st.composite
def conversations(draw):
    turns = draw(st.lists(st.tuples(PHRASES, PHRASES), min_size=1, max_size=3))
    system = draw(st.none() | PHRASES)
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages}


@st.composite
def jsonl_files(draw, rows):
    keys = st.sampled_from(["messages", "role", "content", "id", "kind", "expect"]) | TEXT
    lines = [_json_line(draw, draw(mutated(row, keys))) for row in draw(st.lists(rows, min_size=0, max_size=4))]
    return draw(corrupted(b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))))


@st.composite
def prompt_rows(draw):
    row = draw(conversations())
    return {
        "id": draw(st.integers(0, 999).map("p{}".format)),
        "kind": draw(st.sampled_from(["short", "identity"])),
        "expect": draw(st.sampled_from([None, "short", "long"])),
        "messages": row["messages"][:-1],
    }


YAML_SNIPPETS = st.sampled_from(
    [
        "seed: 2020-13-45",
        "x: !!python/object:os.system ls",
        "[[[[",
        "a: &a [*a]",
        "lora_scale: 1e999",
        ".nan",
        "? [a]\n: 1",
        "{",
        "\tepochs: 1",
        "epochs: 1: 2",
        "data: !!binary ???",
        "epochs: !!int abc",
        "- a",
        "%YAML 9.9",
        "---\nepochs: 1",
        "epochs: " + "9" * 5000,
        "'unclosed",
        "epochs: 2",
        "progress: yes",
        "lora_keys: q_proj",
    ]
)


@st.composite
def yaml_files(draw, base: dict, keys):
    value = draw(mutated(base, keys))
    try:
        text = yaml.safe_dump(value, allow_unicode=draw(st.booleans()))
    except yaml.YAMLError:  # a value safe_dump cannot write; the snippets still cover bad YAML
        text = ""
    text = re.sub(r'"\\0RAW:(\d+)"', lambda m: RAW_YAML[int(m[1]) % len(RAW_YAML)], text)
    lines = text.split("\n")
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(YAML_SNIPPETS))
    return draw(corrupted("\n".join(lines).encode("utf-8", "surrogatepass")))


# ------------------------------------------------------------------ what every error must say

FIELDS = r"messages(\[\d+\](\.(role|content))?)?|id|kind|expect"
LINE_PROBLEMS = ("not valid UTF-8", "malformed JSON", "expected a JSON object", "missing field 'messages'")
FILE_PROBLEMS = ("no conversations in file", "no prompts in file")


def assert_names_its_place(error: DataError, path: Path, data: bytes) -> None:
    event(_kind(error.problem))
    assert str(error) == f"{error.where}: {error.problem}"
    if error.where == str(path):
        assert error.problem in FILE_PROBLEMS, error
        return
    match = re.fullmatch(re.escape(str(path)) + r":(\d+)(?::(.+))?", error.where)
    assert match, error
    assert 1 <= int(match[1]) <= data.count(b"\n") + 1, error
    if match[2] is None:
        assert error.problem.startswith(LINE_PROBLEMS), error  # a problem with a field names the field
    else:
        assert re.fullmatch(FIELDS, match[2]), error


def _kind(problem: str) -> str:
    """The problem without its particulars, for `pytest --hypothesis-show-statistics`."""
    return re.sub(r"\d+|'[^']*'|\\u\w+|/\S+", "_", problem)[:50]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


# ------------------------------------------------------------------ the properties


def known(cases: list[bytes]):
    """Try these files first, every run (hypothesis's @example, once per case)."""

    def decorate(test):
        for case in reversed(cases):
            test = example(data=case)(test)
        return test

    return decorate


GOOD = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "G\'day!"}]}'
# Each of these once ended in a bare exception or a wrong line number; hypothesis always tries them first.
KNOWN_JSONL = [
    GOOD + b"\n" + GOOD.replace(b'"G\'day!"', b"9" * 5000),  # ValueError: integer string conversion limit
    GOOD + b"\n" + b"[" * 5000 + b"\n",  # RecursionError
    GOOD.replace(b"G'day!", b"\\ud800") + b"\n",  # a lone surrogate: TypeError in the tokenizer
    # a BOM, CRLF, and U+2028 and NEL in a string (str.splitlines splits there)
    b"\xef\xbb\xbf" + GOOD + b"\r\n" + GOOD.replace(b"hi", b"h\xe2\x80\xa8i\xc2\x85") + b"\r\n",
    GOOD + b"\nnull\n",  # a row that is not an object
    GOOD[:-20] + b"\xe2\x80",  # cut inside a character
]


@EXAMPLES
@given(data=jsonl_files(conversations()))
@known(KNOWN_JSONL)
def test_read_jsonl_loads_or_names_file_line_and_field(workdir, data):
    path = workdir / "train.jsonl"
    path.write_bytes(data)
    try:
        rows = read_jsonl(path)
    except DataError as error:
        assert_names_its_place(error, path, data)
        return
    event("loaded")
    for row in rows:
        assert re.fullmatch(re.escape(str(path)) + r":\d+", row.source)
        for message in row.messages:
            message["content"].encode("utf-8")  # only text the tokenizer can take gets through


@EXAMPLES
@given(data=jsonl_files(conversations()))
@known(KNOWN_JSONL)
def test_validate_reports_every_problem_in_place(workdir, tiny_tokenizer, data):
    path = workdir / "valid.jsonl"
    path.write_bytes(data)
    report = validate_files([path], tiny_tokenizer, max_seq_length=64)
    for problem in report.problems:  # duplicates and token counts too: file:line:messages
        assert isinstance(problem, DataError)
        assert_names_its_place(problem, path, data)


PROMPT = b'{"id": "p1", "kind": "short", "messages": [{"role": "user", "content": "hi"}]}'
KNOWN_PROMPTS = [
    PROMPT + b"\r" + PROMPT.replace(b"p1", b"p2") + b"\n\x80\n",  # str.splitlines counted the CR as a line end
    PROMPT + b"\n[]\n",  # AttributeError: 'list' object has no attribute 'get'
    PROMPT + b"\n" + PROMPT + b"\n",  # one id twice would merge two prompts' replies
    PROMPT.replace(b'"p1"', b"1" + b"0" * 4400) + b"\n",  # ValueError: integer string conversion limit
]


@EXAMPLES
@given(data=jsonl_files(prompt_rows()))
@known(KNOWN_PROMPTS)
def test_read_prompts_loads_or_names_file_line_and_field(workdir, data):
    path = workdir / "prompts.jsonl"
    path.write_bytes(data)
    try:
        prompts = read_prompts(path)
    except DataError as error:
        assert_names_its_place(error, path, data)
        return
    event("loaded")
    assert len({p.id for p in prompts}) == len(prompts)
    assert all(p.messages[-1]["role"] == "user" for p in prompts)


CONFIG = {
    "epochs": 2,
    "learning_rate": 2.0e-4,
    "lora_keys": ["self_attn.q_proj"],
    "progress": False,
    "model": None,
    "data": "data/bluey",
    "save_every": 25,
    "min_lr_ratio": 0.1,
    "num_layers": -1,
    "fine_tune_type": "lora",
}
CONFIG_KEYS = st.sampled_from(config_keys()) | TEXT | st.integers() | st.none() | st.booleans()


# Each of these once ended in a bare exception, or loaded a value of the wrong type.
KNOWN_YAML = [
    b"seed: 2020-13-45\n",  # ValueError from the date constructor
    b"seed: " + b"9" * 5000 + b"\n",  # ValueError: integer string conversion limit
    b"name: Bluey\nepochs: 2\n\x80\n",  # UnicodeDecodeError
    b"name: Bluey\n1: x\nfoo: y\n",  # TypeError sorting and joining the unknown keys
    b"name: Bluey\n? null\n: x\n",  # TypeError joining them
    b"[" * 5000,  # RecursionError
]


@EXAMPLES
@given(data=yaml_files(CONFIG, CONFIG_KEYS))
@known(KNOWN_YAML + [b"progress:\n", b"learning_rate: [1]\n", b"lora_scale: 2e1\n"])
def test_load_config_loads_or_names_file_and_key(workdir, data):
    path = workdir / "config.yaml"
    path.write_bytes(data)
    try:
        config = load_config(path)
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"{path}:"), message
        rest = message[len(str(path)) :]
        event(_kind(rest))
        assert re.match(
            r"(:\d+(:.+?)?: |: (not valid YAML|expected a mapping|unknown key|cannot read|set epochs)|"
            r": (\w+|lora_keys\[\d+\]) must )",
            rest,
        ), message
        return
    event("loaded")
    for key, hint in typing.get_type_hints(TrainConfig).items():
        value = getattr(config, key)
        assert wrong_type(hint, value) is None, key
        assert hint is not float or (type(value) is float and math.isfinite(value)), key


CARD = {
    "name": "Bluey",
    "description": "A blue heeler pup.",
    "default_system_prompt": "You are Bluey.",
    "voice_markers": ["Bingo", "heaps"],
    "break_character_markers": ["as an ai"],
}
CARD_KEYS = st.sampled_from(list(CARD)) | TEXT | st.integers() | st.none()


@EXAMPLES
@given(data=yaml_files(CARD, CARD_KEYS))
@known(KNOWN_YAML + [b"name: Bluey\ndescription: null\n", b"name: Bluey\nvoice_markers: [Bingo, 1e3]\n"])
def test_load_card_loads_or_names_file_and_key(workdir, data):
    path = workdir / "character.yaml"
    path.write_bytes(data)
    try:
        card = load_card(path)
    except CardError as error:
        assert str(error).startswith(f"{path}:"), error
        event(_kind(str(error)[len(str(path)) :]))
        return
    event("loaded")
    assert isinstance(card.name, str) and card.name.strip()
    assert all(isinstance(m, str) and m.strip() for m in card.voice_markers + card.break_character_markers)
    assert isinstance(card.description, str) and isinstance(card.default_system_prompt, (str, type(None)))


# ------------------------------------------------------------------ the fixes, each with its exact message


def test_data_validate_command_fails_with_file_line_and_field(tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    from mlx_bluey.cli import cli

    path = tmp_path / "bad.jsonl"
    lines = [GOOD, KNOWN_JSONL[0].split(b"\n")[1], b"[" * 5000, KNOWN_JSONL[2].strip(), b"\xff"]
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(cli, ["data", "validate", "--model", str(tiny_model_dir), str(path), str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        (
            f"{path}:2: malformed JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 "
            "digits"
        ),
        f"{path}:3: malformed JSON: nested too deeply",
        f"{path}:4:messages[1].content: contains a lone surrogate \\ud800 (not valid Unicode)",
        f"{path}:5: not valid UTF-8 (byte 0 of the line)",
        f"{tmp_path}: not a file",
    ]
    assert result.stdout == "1 conversations in 2 file(s): 5 problem(s)\n"


def test_bom_crlf_and_unicode_line_separators_are_fine(tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_bytes(KNOWN_JSONL[3])
    rows = read_jsonl(jsonl)
    assert [r.source for r in rows] == [f"{jsonl}:1", f"{jsonl}:2"]
    assert rows[1].messages[0]["content"] == "h\u2028i\x85"
    prompts = tmp_path / "prompts.jsonl"
    second = PROMPT.replace(b"p1", b"p2")
    prompts.write_bytes(b"\xef\xbb\xbf" + PROMPT.replace(b"hi", b"h\xe2\x80\xa8i") + b"\r\n\n" + second)
    assert [(p.id, p.messages[0]["content"]) for p in read_prompts(prompts)] == [("p1", "h\u2028i"), ("p2", "hi")]


@pytest.mark.parametrize(
    "data,message",
    [
        (KNOWN_PROMPTS[0], "1: malformed JSON: Extra data at column 80"),  # a lone CR ends no line
        (KNOWN_PROMPTS[1], "2: expected a JSON object with id, kind and messages"),
        (KNOWN_PROMPTS[2], "2:id: 'p1' is already used by {path}:1"),
        (
            KNOWN_PROMPTS[3],
            "1: malformed JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 4401 digits",
        ),
        (PROMPT.replace(b'"p1"', b'" "'), "1:id: required, a non-empty string"),
        (PROMPT.replace(b'"p1"', b'"\\udfff"'), "1:id: contains a lone surrogate \\udfff (not valid Unicode)"),
    ],
)
def test_bad_prompt_file_names_file_line_and_field(tmp_path, data, message):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(data)
    with pytest.raises(DataError) as error:
        read_prompts(path)
    assert str(error.value) == f"{path}:" + message.format(path=path)


@pytest.mark.parametrize(
    "text,message",
    [
        ("name: Bluey\ndescription: 5\n", ":description: must be a string, not 5"),
        ("name: Bluey\ndefault_system_prompt: [a]\n", ":default_system_prompt: must be a string or null, not ['a']"),
        ("name: Bluey\n? null\n: x\n", ":2: a key must be a name, not None"),
        ("name: Bluey\nname: Bingo\n", ":2:name: given twice (also on line 1); keep one"),
        (
            "name: Bluey\ndescription: !!int abc\n",
            ":2:description: cannot read this value: invalid literal for int() with base 10: 'abc'",
        ),
        ('name: "Blu\\0ey"\n', ":1:name: contains a NUL character (\\0)"),
        (
            "name: Bluey\nvoice-markers: [a]\n",
            (
                ": unknown key(s) 'voice-markers'; known: name, description, default_system_prompt, voice_markers, "
                "break_character_markers, facts, pressure_markers, assistant_templates"
            ),
        ),
    ],
)
def test_bad_card_names_file_line_and_key(tmp_path, text, message):
    path = tmp_path / "character.yaml"
    path.write_text(text)
    with pytest.raises(CardError) as error:
        load_card(path)
    assert str(error.value) == f"{path}{message}"
