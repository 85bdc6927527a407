"""Character cards: the shipped Bluey card loads; a bad card names its file and key."""

from pathlib import Path

import pytest

from mlx_bluey.character import (
    CardError,
    CharacterCard,
    card_for_adapter,
    data_dir_for_adapter,
    load_card,
    system_prompt,
)

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
    (tmp_path / "run" / "manifest.json").write_text(
        json.dumps({"data": {"train": str(tmp_path / "data" / "train.jsonl")}})
    )
    assert card_for_adapter(tmp_path / "run").name == "Tutor"
    assert card_for_adapter(None) is None
    # a preference stage (trained on pairs, no card beside them) uses the card of the adapter it started from
    (tmp_path / "simpo").mkdir()
    (tmp_path / "simpo" / "manifest.json").write_text(
        json.dumps(
            {
                "data": {"train": str(tmp_path / "pairs" / "train.jsonl")},
                "config": {"method": "simpo", "from_adapter": str(tmp_path / "run")},
            }
        )
    )
    assert data_dir_for_adapter(tmp_path / "simpo") == tmp_path / "data"
    assert card_for_adapter(tmp_path / "simpo").name == "Tutor"


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        ("facts: 3\n", ":facts: must be a list of facts (id, questions, accept, reject), not 3"),
        ("facts: [x]\n", ":facts[0]: must be a mapping with id, questions, accept and reject"),
        ("facts:\n  - {id: a, questions: [q1]}\n", ":facts[0].accept: required"),
        (
            "facts:\n  - {id: a, questions: q1, accept: [x]}\n",
            ":facts[0].questions: must be a list of strings, not 'q1'",
        ),
        (
            "facts:\n  - {id: a, questions: [], accept: [x]}\n",
            ":facts[0]: needs at least one question and one accepted answer",
        ),
        ("facts:\n  - {id: a, questions: [q1], accept: [' ']}\n", ":facts[0].accept: must not hold empty strings"),
        (
            "facts:\n  - {id: a, questions: [q1], accept: [x], answer: y}\n",
            ":facts[0]: unknown key(s) answer; known: id, questions, accept, reject, swap, answers",
        ),
        (
            "facts:\n  - {id: a, questions: [q1], accept: [x], swap: ['four to six']}\n",
            ":facts[0].swap[0]: must be \"right phrase -> wrong phrase\", not 'four to six'",
        ),
        (
            "facts:\n  - {id: a, questions: [q1], accept: [x], swap: [' -> six']}\n",
            ":facts[0].swap[0]: must be \"right phrase -> wrong phrase\", not ' -> six'",
        ),
        (
            "facts:\n  - {id: a, questions: [q1], accept: [x], swap: ['six -> six']}\n",
            ":facts[0].swap[0]: must be \"right phrase -> wrong phrase\", not 'six -> six'",
        ),
        (
            "facts:\n  - {id: a, questions: [q1], accept: [x]}\n  - {id: a, questions: [r1], accept: [y]}\n",
            ":facts[1].id: must be a non-empty name used once, not 'a'",
        ),
    ],
)
def test_card_facts_errors_name_the_fact_and_key(tmp_path, facts, message):
    from mlx_bluey.character import CardError, load_card

    path = tmp_path / "character.yaml"
    path.write_text("name: Tutor\n" + facts)
    with pytest.raises(CardError) as error:
        load_card(path)
    assert str(error.value) == f"{path}{message}"


def test_the_bluey_card_has_its_facts():
    from pathlib import Path

    from mlx_bluey.character import load_card

    card = load_card(Path(__file__).parent.parent / "data" / "bluey" / "character.yaml")
    facts = {fact.id: fact for fact in card.facts}
    assert facts["sister_age"].accept == ["four", "4"] and facts["dad_name"].accept == ["Bandit"]
    assert len(facts) == 10 and sum(len(f.questions) for f in card.facts) == 33
    assert facts["dad_name"].swaps() == [("Bandit", "Rusty")]
    # a swap's right phrase names an answer the evaluation accepts, and its wrong phrase names none
    from mlx_bluey.text import count_markers

    for fact in card.facts:
        for right, wrong in fact.swaps():
            assert count_markers(right, fact.accept) and not count_markers(wrong, fact.accept), (fact.id, wrong)


def test_system_prompt_takes_the_given_one_else_the_cards():
    card = CharacterCard(name="Bluey", default_system_prompt="Be Bluey.")
    assert system_prompt(card, "Given.", False) == "Given." and system_prompt(None, None, False) is None
    assert system_prompt(card, None, True) == "Be Bluey." and system_prompt(card, "Given.", True) == "Given."
    for no_prompt in (None, CharacterCard(name="Bluey")):
        with pytest.raises(CardError, match="--system-from-card needs a character card with a default_system_prompt"):
            system_prompt(no_prompt, None, True)
