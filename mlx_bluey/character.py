"""Character cards: what is specific to one persona, kept beside its dataset.

    data/bluey/character.yaml     name, description, default_system_prompt,
                                  voice_markers, break_character_markers

The commands are persona-agnostic: `mlx_bluey generate` takes the speaker's name (and, with
--system-from-card, the system prompt) from the card of the data an adapter was trained on;
evaluation reads the marker lists from it.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .yaml_files import read_yaml_mapping, short_repr, wrong_type

CARD_FILE = "character.yaml"


class CardError(ValueError):
    """A character card that cannot be used; the message names the file and key."""


@dataclass
class CharacterCard:
    name: str  # the speaker's name in chat
    description: str = ""  # one line about who this is
    default_system_prompt: str | None = None  # used with --system-from-card
    voice_markers: list[str] = field(default_factory=list)  # words that mark the voice
    break_character_markers: list[str] = field(default_factory=list)  # phrases of a generic assistant


def load_card(path: str | Path) -> CharacterCard:
    path = Path(path)
    data = read_yaml_mapping(path, list(CharacterCard.__dataclass_fields__), CardError, "character card")
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise CardError(f"{path}:name: required, a non-empty string")
    for key in ("voice_markers", "break_character_markers"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise CardError(f"{path}:{key}: must be a list of non-empty strings")
    for key, hint in typing.get_type_hints(CharacterCard).items():
        if key in data and (expected := wrong_type(hint, data[key])):
            raise CardError(f"{path}:{key}: must be {expected}, not {short_repr(data[key])}")
    return CharacterCard(**data)


def data_dir_for_adapter(adapter: str | Path | None) -> Path | None:
    """The directory of the data an adapter was trained on (from its manifest), if it says."""
    if adapter is None:
        return None
    manifest = Path(adapter) / "manifest.json"
    if not manifest.exists():
        return None
    return Path(json.loads(manifest.read_text())["data"]["train"]).parent


def card_for_adapter(adapter: str | Path | None) -> CharacterCard | None:
    """The card beside the data an adapter was trained on, if there is one."""
    data_dir = data_dir_for_adapter(adapter)
    card = data_dir / CARD_FILE if data_dir else None
    return load_card(card) if card and card.exists() else None
