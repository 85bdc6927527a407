"""A training system message (system_message.py): trained in, recorded, and sent by every front end."""

import json
from pathlib import Path

import pytest
from conftest import chat, tiny_train_config, write_jsonl

from mlx_bluey.character import CardError, CharacterCard, load_card, system_prompt
from mlx_bluey.chat_format import prompt_ids
from mlx_bluey.config import ConfigError, load_config
from mlx_bluey.data import Conversation
from mlx_bluey.system_message import (
    add_system,
    fused_system,
    served_system,
    trained_system,
    training_system,
    with_system,
)
from mlx_bluey.train import TrainError, train

SYSTEM = "Be Bluey."
QUIET = {"log": lambda _: None}


@pytest.fixture()
def data(tmp_path):
    rows = [chat(f"question {i}?", "Hooray! Bingo and me!") for i in range(6)]
    rows.append(chat("own?", "Yes!", system="My own."))  # keeps its own system message
    write_jsonl(tmp_path / "data" / "train.jsonl", rows[1:])
    write_jsonl(tmp_path / "data" / "valid.jsonl", rows[:1])
    return tmp_path / "data"


def _manifest(output):
    return json.loads((output / "manifest.json").read_text())


def test_add_system_puts_it_first_unless_the_conversation_has_its_own():
    user = [{"role": "user", "content": "hi"}]
    assert add_system(user, SYSTEM) == [{"role": "system", "content": SYSTEM}, *user]
    own = [{"role": "system", "content": "Own."}, *user]
    assert add_system(own, SYSTEM) == own and add_system(user, None) == user and add_system(user, "") == user
    rows = [Conversation(user, "a:1"), Conversation(own, "a:2")]
    assert [r.messages[0]["content"] for r in with_system(rows, SYSTEM)] == [SYSTEM, "Own."]


def test_training_with_a_system_prompt_adds_its_tokens_to_each_prompt_and_records_it(
    tiny_model_dir, tiny_tokenizer, data, tmp_path
):
    plain, system = tmp_path / "plain", tmp_path / "system"
    train(tiny_train_config(tiny_model_dir, data, plain, iters=1), **QUIET)
    train(tiny_train_config(tiny_model_dir, data, system, iters=1, system_prompt=SYSTEM), **QUIET)
    before, after = _manifest(plain), _manifest(system)
    assert before["system_prompt"] is None and after["system_prompt"] == SYSTEM
    assert trained_system(system) == SYSTEM and trained_system(plain) is None
    # the prompt of each of the 5 training conversations without one grows by the message; no reply changes
    user = [{"role": "user", "content": "question 1?"}]
    per_conversation = len(prompt_ids(tiny_tokenizer, add_system(user, SYSTEM))) - len(prompt_ids(tiny_tokenizer, user))
    assert per_conversation == len(SYSTEM) + 2  # the character-level tiny tokenizer: the text, then "\n\n"
    assert after["tokens"]["train"] - before["tokens"]["train"] == 5 * per_conversation
    assert after["tokens"]["train_supervised"] == before["tokens"]["train_supervised"]
    # a resume with another message is another run
    with pytest.raises(TrainError, match="system_prompt: 'Be Bluey.' -> 'Other.'"):
        train(tiny_train_config(tiny_model_dir, data, system, iters=2, system_prompt="Other."), resume=True, **QUIET)


def test_system_from_card_and_a_later_stage_keep_the_message(tiny_model_dir, data, tmp_path):
    (data / "character.yaml").write_text(f"name: Bluey\ndefault_system_prompt: {SYSTEM}\n")
    first = tmp_path / "first"
    train(tiny_train_config(tiny_model_dir, data, first, iters=1, system_from_card=True), **QUIET)
    assert _manifest(first)["system_prompt"] == SYSTEM
    later = tmp_path / "later"  # from_adapter: the start adapter's format, unless told otherwise ("" = none)
    train(tiny_train_config(tiny_model_dir, data, later, iters=1, from_adapter=str(first)), **QUIET)
    assert _manifest(later)["system_prompt"] == SYSTEM
    train(tiny_train_config(tiny_model_dir, data, later, iters=1, from_adapter=str(first), system_prompt=""),
          overwrite=True, **QUIET)  # fmt: skip
    assert _manifest(later)["system_prompt"] is None


def test_system_from_card_without_a_prompt_in_the_card_names_the_file(tiny_model_dir, data, tmp_path):
    (data / "character.yaml").write_text("name: Bluey\n")
    with pytest.raises(CardError, match=f"system_from_card: {data / 'character.yaml'} has no default_system_prompt"):
        train(tiny_train_config(tiny_model_dir, data, tmp_path / "out", system_from_card=True), **QUIET)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="set system_prompt or system_from_card, not both"):
        tiny_train_config(tiny_model_dir, data, tmp_path / "out", system_from_card=True, system_prompt=SYSTEM)


def test_front_ends_send_the_given_message_else_the_cards_else_the_trained_one():
    card = CharacterCard(name="Bluey", default_system_prompt="Card.")
    assert system_prompt(card, None, False, "Trained.") == "Trained."
    assert system_prompt(card, "Given.", False, "Trained.") == "Given."
    assert system_prompt(card, "", False, "Trained.") is None  # --system "" sends none
    assert system_prompt(card, None, True, "Trained.") == "Card."
    assert system_prompt(None, None, False, None) is None


def test_fuse_hands_the_trained_message_to_the_page_and_the_modelfile(tiny_model_dir, data, tmp_path):
    from conftest import fuse_with_cli

    from mlx_bluey.gguf_export import modelfile

    adapter = tmp_path / "adapter"
    train(tiny_train_config(tiny_model_dir, data, adapter, iters=1, system_prompt=SYSTEM), **QUIET)
    result = fuse_with_cli(adapter, tmp_path / "fused")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "fused" / "character.json").read_text()) == {"trained_system_prompt": SYSTEM}
    assert fused_system(tmp_path / "fused") == SYSTEM and fused_system(tmp_path) is None
    # generate, evaluate and serve --api: the adapter's, else the fused directory's; a registry name has none
    assert served_system(adapter, None) == SYSTEM and served_system(None, tmp_path / "fused") == SYSTEM
    assert served_system(None, "gemma-3-270m") is None and served_system(None, None) is None
    assert f'SYSTEM """{SYSTEM}"""' in modelfile("x.gguf", fused_system(tmp_path / "fused"), ["<end_of_turn>"])
    assert "SYSTEM" not in modelfile("x.gguf", None, ["<end_of_turn>"])


def _given(rows) -> list[str]:
    return [r.source for r in rows if r.messages[0]["role"] == "system"]


def test_system_share_puts_the_message_in_a_seeded_share_of_the_conversations(tiny_model_dir, data, tmp_path):
    rows = [Conversation([{"role": "user", "content": f"q{i}"}], f"a:{i}") for i in range(10)]
    # numpy's PCG64 permutation, the same on every machine: seed 0 -> 4 6 2 7 3 ..., seed 1 -> 8 4 7 0 1 ...
    assert _given(with_system(rows, SYSTEM, 0.5, seed=0)) == ["a:2", "a:3", "a:4", "a:6", "a:7"]
    assert _given(with_system(rows, SYSTEM, 0.5, seed=1)) == ["a:0", "a:1", "a:4", "a:7", "a:8"]
    assert _given(with_system(rows, SYSTEM, 0.26)) == ["a:2", "a:4", "a:6"]  # round(2.6) = 3
    assert with_system(rows, SYSTEM, 0.0) == rows and len(_given(with_system(rows, SYSTEM))) == 10
    # training: round(0.4 * 6) = 2 of the 6 rows, permutation(6) = 3 2 ..., both without their own message;
    # the one validation row: round(0.4) = 0
    plain, some = tmp_path / "plain", tmp_path / "some"
    train(tiny_train_config(tiny_model_dir, data, plain, iters=1), **QUIET)
    train(tiny_train_config(tiny_model_dir, data, some, iters=1, system_prompt=SYSTEM, system_share=0.4), **QUIET)
    grown = _manifest(some)["tokens"]["train"] - _manifest(plain)["tokens"]["train"]
    assert grown == 2 * (len(SYSTEM) + 2)  # the character-level tiny tokenizer: the text, then "\n\n"
    assert _manifest(some)["system_share"] == 0.4 and _manifest(plain)["system_share"] == 0.0
    with pytest.raises(ConfigError, match=r"system_share must be in \[0, 1\]"):
        tiny_train_config(tiny_model_dir, data, some, system_share=1.5)


def test_the_committed_preference_pairs_find_the_bluey_card_beside_them(monkeypatch):
    """configs/bluey-dpo.yaml by hand: its from_adapter's manifest names a /tmp copy of the data, so the card must be
    beside the pairs (data/bluey-pairs-dpo/character.yaml, a link to data/bluey's)."""
    root = Path(__file__).parent.parent
    monkeypatch.chdir(root)  # the config's paths are the checkout's
    config = load_config("configs/bluey-dpo.yaml", {"from_adapter": None})  # no adapter's data to fall back on
    expected = load_card(root / "data/bluey/character.yaml").default_system_prompt
    assert training_system(config, Path(config.data) / "train.jsonl") == expected
