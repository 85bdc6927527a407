"""Character cards: the shipped Bluey card loads; a bad card names its file and key."""

from pathlib import Path

import pytest

from mlx_bluey.character import CardError, card_for_adapter, load_card

BLUEY = Path(__file__).parent.parent / "data" / "bluey" / "character.yaml"


def test_bluey_card_loads():
    card = load_card(BLUEY)
    assert card.name == "Bluey"
    assert "Bingo" in card.voice_markers and "as an ai" in card.break_character_markers
    assert card.default_system_prompt.startswith("You are Bluey Heeler")


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("name: Tutor\nvoice: [x]\n", r"c\.yaml: unknown key\(s\) voice"),
        ("description: no name\n", r"c\.yaml:name: required"),
        ("name: Tutor\nvoice_markers: oops\n", r"c\.yaml:voice_markers: must be a list"),
        ("- a\n- b\n", r"c\.yaml: expected a mapping"),
    ],
)
def test_bad_card_names_file_and_key(tmp_path, text, pattern):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(CardError, match=pattern):
        load_card(path)


def test_adapter_finds_the_card_beside_its_training_data(tmp_path):
    import json

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "character.yaml").write_text("name: Tutor\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"data": {"train": str(tmp_path / "data" / "train.jsonl")}}))
    assert card_for_adapter(tmp_path / "run").name == "Tutor"
    assert card_for_adapter(None) is None
