"""Character cards: what is specific to one persona, kept beside its dataset.

    data/bluey/character.yaml     name, description, default_system_prompt,
                                  voice_markers, break_character_markers, facts,
                                  pressure_markers, assistant_templates

The commands are persona-agnostic: `mlx_bluey generate` takes the speaker's name (and, with
--system-from-card, the system prompt) from the card of the data an adapter was trained on;
evaluation reads the marker lists and the facts (questions it asks, answers it accepts) from it.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .yaml_files import read_yaml_mapping, short_repr, wrong_type

CARD_FILE = "character.yaml"
SWAP_ARROW = " -> "  # CardFact.swap: "Bingo is four -> Bingo is six"


class CardError(ValueError):
    """A character card that cannot be used; the message names the file and key."""


@dataclass
class CardFact:
    id: str  # names the fact in reports, e.g. sister_age
    questions: list[str]  # asked by `mlx_bluey evaluate`, held out from the training data
    accept: list[str]  # a right reply names one of these (whole words, any case)
    reject: list[str] = field(default_factory=list)  # ... and none of these (wrong answers, guesses)
    # `mlx_bluey data pairs`: "right -> wrong" phrases; a training reply that says the right phrase (whole
    # words, any case) becomes a pair whose rejected reply says the wrong one instead, all else equal
    swap: list[str] = field(default_factory=list)
    # other answers to the questions (wrong ones, and "yes" to "Do you live in Sydney?"): when set, the first
    # answer a reply names, of accept and these, must be an accepted one ("Four! ... six bites" to "How many
    # candles?" is wrong). Words the question itself says are not counted: "Not Sydney, Brisbane!" is right.
    answers: list[str] = field(default_factory=list)

    def swaps(self) -> list[tuple[str, str]]:
        """`swap` as (right, wrong) pairs; load_card has checked each holds one " -> "."""
        return [tuple(part.strip() for part in item.split(SWAP_ARROW)) for item in self.swap]


@dataclass
class CharacterCard:
    name: str  # the speaker's name in chat
    description: str = ""  # one line about who this is
    default_system_prompt: str | None = None  # used with --system-from-card
    voice_markers: list[str] = field(default_factory=list)  # words that mark the voice
    break_character_markers: list[str] = field(default_factory=list)  # phrases of a generic assistant
    facts: list[CardFact] = field(default_factory=list)  # what the character never gets wrong
    pressure_markers: list[str] = field(default_factory=list)  # a prompt naming one asks for the assistant
    assistant_templates: list[str] = field(default_factory=list)  # assistant-style replies: preference negatives


def load_card(path: str | Path) -> CharacterCard:
    path = Path(path)
    data = read_yaml_mapping(path, list(CharacterCard.__dataclass_fields__), CardError, "character card")
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise CardError(f"{path}:name: required, a non-empty string")
    for key in ("voice_markers", "break_character_markers", "pressure_markers", "assistant_templates"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise CardError(f"{path}:{key}: must be a list of non-empty strings")
    hints = typing.get_type_hints(CharacterCard)
    for key, hint in hints.items():
        if key != "facts" and key in data and (expected := wrong_type(hint, data[key])):
            raise CardError(f"{path}:{key}: must be {expected}, not {short_repr(data[key])}")
    data["facts"] = _facts(path, data.get("facts", []))
    return CharacterCard(**data)


def _facts(path: Path, value) -> list[CardFact]:
    if not isinstance(value, list):
        raise CardError(
            f"{path}:facts: must be a list of facts (id, questions, accept, reject), not {short_repr(value)}"
        )
    facts, seen = [], set()
    hints = typing.get_type_hints(CardFact)
    for i, item in enumerate(value):
        where = f"{path}:facts[{i}]"
        if not isinstance(item, dict):
            raise CardError(f"{where}: must be a mapping with id, questions, accept and reject")
        unknown = sorted(set(map(str, item)) - set(hints))
        if unknown:
            raise CardError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(hints)}")
        for key, hint in hints.items():
            if key not in item and key not in ("reject", "swap", "answers"):
                raise CardError(f"{where}.{key}: required")
            if key in item and (expected := wrong_type(hint, item[key])):
                raise CardError(f"{where}.{key}: must be {expected}, not {short_repr(item[key])}")
        for key in ("questions", "accept", "reject", "swap", "answers"):
            if any(not text.strip() for text in item.get(key, [])):
                raise CardError(f"{where}.{key}: must not hold empty strings")
        for j, text in enumerate(item.get("swap", [])):
            parts = text.split(SWAP_ARROW)
            if len(parts) != 2 or not all(part.strip() for part in parts) or parts[0].strip() == parts[1].strip():
                raise CardError(f'{where}.swap[{j}]: must be "right phrase -> wrong phrase", not {short_repr(text)}')
        if not item["questions"] or not item["accept"]:
            raise CardError(f"{where}: needs at least one question and one accepted answer")
        if not item["id"].strip() or item["id"] in seen:
            raise CardError(f"{where}.id: must be a non-empty name used once, not {item['id']!r}")
        seen.add(item["id"])
        facts.append(CardFact(**item))
    return facts


def data_dir_for_adapter(adapter: str | Path | None, _seen: frozenset = frozenset()) -> Path | None:
    """The directory of the chat data an adapter was trained on (from its manifest), if it says. A
    preference stage trained on pairs: the data of the adapter it started from (its from_adapter)."""
    if adapter is None or str(adapter) in _seen:
        return None
    manifest = Path(adapter) / "manifest.json"
    if not manifest.exists():
        return None
    saved = json.loads(manifest.read_text())
    config = saved.get("config") or {}
    if config.get("method", "sft") != "sft" and config.get("from_adapter"):
        return data_dir_for_adapter(config["from_adapter"], _seen | {str(adapter)})
    return Path(saved["data"]["train"]).parent


def card_beside(data_file: str | Path, explicit: str | Path | None = None) -> Path:
    """The card a data file is read with: the one named (--character), else character.yaml beside the file."""
    return Path(explicit) if explicit else Path(data_file).parent / CARD_FILE


def card_for_adapter(adapter: str | Path | None) -> CharacterCard | None:
    """The card beside the data an adapter was trained on, if there is one."""
    data_dir = data_dir_for_adapter(adapter)
    card = data_dir / CARD_FILE if data_dir else None
    return load_card(card) if card and card.exists() else None


def system_prompt(
    card: CharacterCard | None, given: str | None, from_card: bool, trained: str | None = None
) -> str | None:
    """The system message to send: `given` ("" = none), else the card's default_system_prompt with
    --system-from-card, else `trained`, the one the adapter was trained with (system_message.py)."""
    if given is not None:
        return given or None
    if not from_card:
        return trained
    if card is None or not card.default_system_prompt:
        raise CardError("--system-from-card needs a character card with a default_system_prompt")
    return card.default_system_prompt
