"""The one chat format: exact ids and a label per token."""

import pytest
from conftest import TINY_VOCAB, chat

from mlx_bluey.chat_format import CHAT_TEMPLATE, encode_conversation, prompt_ids, render

BOS, SOT, EOT, NL = 2, 4, 5, 6


def ids_of(text: str) -> list[int]:
    return [TINY_VOCAB["▁" if c == " " else c] for c in text]


def test_render_matches_gemma3_layout(tiny_tokenizer):
    text = render(tiny_tokenizer, chat("hi", "Yo!")["messages"])
    assert text == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nYo!<end_of_turn>\n"


def test_system_message_is_folded_into_first_user_turn(tiny_tokenizer):
    text = render(tiny_tokenizer, chat("hi", "Yo!", system="Be Bluey.")["messages"])
    assert text.startswith("<bos><start_of_turn>user\nBe Bluey.\n\nhi<end_of_turn>\n")


def test_labels_cover_each_reply_and_its_end_of_turn_only(tiny_tokenizer):
    encoded = encode_conversation(tiny_tokenizer, chat("hi", "Yo!", "more", "OK")["messages"])
    user1 = [BOS, SOT, *ids_of("user"), NL, *ids_of("hi"), EOT, NL, SOT, *ids_of("model"), NL]
    reply1 = [*ids_of("Yo!"), EOT]
    user2 = [NL, SOT, *ids_of("user"), NL, *ids_of("more"), EOT, NL, SOT, *ids_of("model"), NL]
    reply2 = [*ids_of("OK"), EOT]
    assert encoded.ids == user1 + reply1 + user2 + reply2 + [NL]
    expected = [False] * len(user1) + [True] * 4 + [False] * len(user2) + [True] * 3 + [False]
    assert encoded.labels == expected
    assert encoded.n_supervised == 7


def test_generation_prompt_ends_with_model_turn(tiny_tokenizer):
    ids = prompt_ids(tiny_tokenizer, chat("hi", "Yo!", "again")["messages"][:3])
    assert ids[-7:] == [SOT, *ids_of("model"), NL]
    assert ids.count(BOS) == 1


@pytest.mark.real
def test_template_file_is_the_one_in_the_embedded_tokenizer_config(embedded_dir):
    import json

    config = json.loads((embedded_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE
