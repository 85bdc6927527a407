"""`mlx_bluey data pairs`: each check on hand-made replies, and the command on the tiny model
(repeatable with a seed, resumable after a kill mid-line, every pair readable by the trainer)."""

import json
import random
import subprocess
import sys

import pytest
from conftest import chat, write_jsonl

from mlx_bluey.character import CardFact, CharacterCard
from mlx_bluey.data import DataError
from mlx_bluey.data_pairs import (
    answer_fact,
    build_pairs,
    fact_pair,
    failed_checks,
    journal_header,
    length_problem,
    template_pair,
)
from mlx_bluey.generation import GenerationSettings
from mlx_bluey.preference import read_pairs

CARD = CharacterCard(
    name="Bluey",
    break_character_markers=["as an ai"],
    facts=[
        CardFact("sister_age", ["How old is Bingo?"], ["four"], ["she's six"], ["she's four -> she's six"]),
        CardFact("dad_name", ["Dad's name?"], ["Bandit"], swap=["Bandit -> Rusty", "my dad -> my uncle"]),
    ],
    pressure_markers=["robot", "code"],
    assistant_templates=["As an AI, I cannot play.", "Sure! Here is the code."],
)


def test_length_problem_allows_slack_then_names_the_counts():
    assert length_problem("word " * 41, "one") == "too long: 41 words, the dataset's reply 1"
    assert length_problem("word " * 22, "one") is None  # 2 x 1 + 20 = 22 is not over
    assert length_problem("hi", "word " * 69) == "too short: 1 words, the dataset's reply 69"
    assert length_problem("hi", "word " * 60) is None  # 60 / 3 - 20 = 0


def test_short_stays_short_rejects_a_reply_the_evaluation_counts_as_not_short():
    five = "We play heaps of games."
    assert length_problem("word " * 25, five) is None  # 25 is not over 2 x 5 + 20 = 30
    assert length_problem("word " * 25, five, short_stays_short=True) == "too long: 25 words, the dataset's reply 5"
    assert length_problem("word " * 24, five, short_stays_short=True) is None  # under SHORT_WORDS = 25
    assert length_problem("word " * 30, "word " * 25, short_stays_short=True) is None  # the dataset's is not short
    assert failed_checks("word " * 24 + "done.", "stop", five, CARD) == []
    assert failed_checks("word " * 24 + "done.", "stop", five, CARD, short_stays_short=True) == [
        "too long: 25 words, the dataset's reply 5"
    ]
    # a journal of either rule is not read for the other: the rule is in the header only when set
    plain = journal_header("d.jsonl", 0, None, None, SETTINGS)
    assert "short_stays_short" not in plain
    assert journal_header("d.jsonl", 0, None, None, SETTINGS, short_stays_short=True) == {
        **plain,
        "short_stays_short": True,
    }


def test_failed_checks_on_hand_made_replies():
    chosen = "Bingo is four and we play heaps."
    assert failed_checks("Bingo is four, mate!", "stop", chosen, CARD) == []
    assert failed_checks("As an AI I think she's six", "length", chosen, CARD) == [
        "out of character: as an ai",
        "unfinished",
        "contradicts card fact sister_age",
        "misses card fact sister_age",  # the dataset's reply answers it in its first words: answer_fact
    ]


def test_a_sampled_reply_misses_the_fact_a_short_dataset_reply_opens_with():
    city = CardFact("home_city", ["Do you live in Sydney?"], ["Brisbane"], answers=["yes", "yep", "Sydney"])
    card = CharacterCard(name="Bluey", facts=[*CARD.facts, city])
    question = "Do you live in Sydney?"
    chosen = "Nope! We live in Brisbane, mate."  # Brisbane is word 5, under ANSWER_WORDS = 6
    assert answer_fact(chosen, question, card) is city
    # "Sydney" said by the question does not count as an answer; "yep" before Brisbane does
    assert failed_checks("Nope, not Sydney! Brisbane!", "stop", chosen, card, question) == []
    assert failed_checks("Yep! We live in Brisbane.", "stop", chosen, card, question) == ["misses card fact home_city"]
    # the answer past the opening words, or a reply over ANSWER_MAX_WORDS (25): the reply answers no fact
    assert answer_fact("We went to the park and then home to Brisbane.", question, card) is None
    assert answer_fact("Brisbane! " + "we play " * 13, question, card) is None  # 1 + 26 words
    # of two facts in the opening, the one named first
    assert answer_fact("Bandit! He's Bingo's dad and mine.", "Dad's name?", card).id == "dad_name"
    # a fact the question names is not what the reply answers
    assert answer_fact("Bandit's four!", "How old is Bandit?", card).id == "sister_age"
    # a reply that says the wrong age is caught by the reject phrase and by the missed answer
    assert failed_checks("She's six!", "stop", "She's four!", card, "How old is Bingo?") == [
        "contradicts card fact sister_age",
        "misses card fact sister_age",
    ]


def test_templates_only_for_prompts_that_name_a_pressure_marker():
    rng = random.Random("0:0")
    prompt = [{"role": "user", "content": "write me some CODE please"}]
    reply, reason = template_pair(prompt, CARD, rng)
    assert reply in CARD.assistant_templates and reason == "assistant-style template (prompt names code)"
    assert template_pair([{"role": "user", "content": "let's play shops"}], CARD, rng) is None
    # the last user turn decides: earlier pressure that the user dropped does not count
    turns = [*prompt, {"role": "assistant", "content": "No code!"}, {"role": "user", "content": "ok, shops?"}]
    assert template_pair(turns, CARD, rng) is None


def test_fact_pairs_swap_the_first_fact_that_fits_whole_words_keeping_capitals():
    swapped, reason = fact_pair("She's four! Bandit says she's fourteen in dog years.", CARD)
    assert swapped == "She's six! Bandit says she's fourteen in dog years."  # "fourteen" is another word
    assert reason == 'contradicts card fact sister_age: "she\'s four" -> "she\'s six"'
    # the first swap of a fact that fits, every place it is said, capitals kept
    assert fact_pair("BANDIT! Bandit, my dad, is funny.", CARD) == (
        "Rusty! Rusty, my dad, is funny.",
        "contradicts card fact dad_name: 'Bandit' -> 'Rusty'",
    )
    assert fact_pair("my dad is funny", CARD)[0] == "my uncle is funny"
    assert fact_pair("Bandits took my biscuits", CARD) is None


@pytest.fixture()
def chats(tmp_path):
    rows = [
        chat("are you a robot?", "No way, I'm Bluey!"),
        chat("what's for brekky", "Toast with heaps of butter, mate. Dad's name is Bandit!"),
        chat("hi", "G'day!", "show me code", "Code is for grown-ups. Let's play!"),
    ]
    return write_jsonl(tmp_path / "chats.jsonl", rows)


SETTINGS = GenerationSettings(max_new_tokens=6)


def _build(chats, output, tiny_model_dir, adapter, limit=None):
    return build_pairs(
        chats,
        output,
        CARD,
        str(tiny_model_dir),
        str(adapter),
        use_base=True,
        seed=3,
        limit=limit,
        settings=SETTINGS,
        log=lambda _: None,
    )


def test_pairs_on_the_tiny_model_repeat_resume_and_load(tmp_path, tiny_model_dir, chats):
    from mlx_bluey.config import TrainConfig
    from mlx_bluey.train import train

    data = write_jsonl(tmp_path / "sft" / "train.jsonl", [chat("hi", "Hooray, hi!")] * 4).parent
    adapter = tmp_path / "adapter"
    config = TrainConfig(model=str(tiny_model_dir), data=str(data), output=str(adapter), iters=1, progress=False)
    train(config, log=lambda _: None)

    first = tmp_path / "first.jsonl"
    stats = _build(chats, first, tiny_model_dir, adapter)
    pairs = read_pairs(first)
    # templates for the two prompts naming a marker (exactly); what the tiny random model says depends on
    # the machine's kernels, so only bounds for the model sources: at most one per conversation each, and
    # its 6-token replies never finish, so an adapter reply that is kept is kept as unfinished
    by_source = stats["by_source"]
    assert (
        by_source["template"] == 2 and by_source["fact"] == 1 and by_source["base"] <= 3 and by_source["adapter"] <= 3
    )
    assert stats["facts_swapped"] == {"sister_age": 0, "dad_name": 1}
    assert stats["pairs"] == len(pairs) == sum(by_source.values()) and by_source["base"] + by_source["adapter"] > 0
    assert stats["adapter_replies_kept"]["unfinished"] == by_source["adapter"]
    assert pairs[0].chosen == "No way, I'm Bluey!" and pairs[0].rejected in CARD.assistant_templates
    assert all(p.reason for p in pairs)
    assert [len(p.messages) for p in pairs if p.chosen.startswith("Code")] == [3] * sum(
        p.chosen.startswith("Code") for p in pairs
    )
    assert not (tmp_path / "first.jsonl.partial").exists()

    again = tmp_path / "again.jsonl"
    _build(chats, again, tiny_model_dir, adapter)
    assert again.read_bytes() == first.read_bytes()  # seeded: the same file

    # killed mid-line after 4 records: the partial file keeps 4, drops the torn one, the rest is generated
    resumed = tmp_path / "resumed.jsonl"
    records = [json.dumps({"header": journal_header(chats, 3, str(tiny_model_dir), str(adapter), SETTINGS)})]
    for source, index in (("template", 0), ("template", 1), ("template", 2), ("fact", 0), ("fact", 1), ("base", 0)):
        pair = next((json.loads(line) for line in first.read_text().splitlines() if _is(line, source, index)), None)
        records.append(json.dumps({"source": source, "conversation": index, "pair": pair}))
    (tmp_path / "resumed.jsonl.partial").write_text("\n".join(records) + '\n{"source": "base", "conv')
    _build(chats, resumed, tiny_model_dir, adapter)
    assert resumed.read_bytes() == first.read_bytes()
    # killed while writing the header: a fresh start
    torn = tmp_path / "torn.jsonl"
    (tmp_path / "torn.jsonl.partial").write_text('{"head')
    _build(chats, torn, tiny_model_dir, adapter)
    assert torn.read_bytes() == first.read_bytes()

    # a journal of another adapter (or other settings) is refused, naming the file
    other = tmp_path / "other.jsonl"
    header = journal_header(chats, 3, str(tiny_model_dir), None, SETTINGS)
    (tmp_path / "other.jsonl.partial").write_text(json.dumps({"header": header}) + "\n")
    with pytest.raises(DataError, match="other.jsonl.partial"):
        _build(chats, other, tiny_model_dir, adapter)

    # a limit bounds the model sources only: templates and facts still cover every conversation
    limited = _build(chats, tmp_path / "limited.jsonl", tiny_model_dir, adapter, limit=1)
    assert limited["conversations_generated_for"] == 1
    assert limited["by_source"]["template"] == 2 and limited["by_source"]["fact"] == 1
    assert limited["by_source"]["base"] + limited["by_source"]["adapter"] <= 2


def _is(line: str, source: str, index: int) -> bool:
    row = json.loads(line)
    prompts = {0: "are you a robot?", 1: "what's for brekky", 2: "show me code"}
    return row["source"] == source and row["messages"][-1]["content"] == prompts[index]


def test_pairs_command_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    command = [sys.executable, "-m", "mlx_bluey.cli", "data", "pairs", str(bad), "--output", str(tmp_path / "p.jsonl")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "character.yaml" in result.stderr  # no card beside the file: named
    (tmp_path / "character.yaml").write_text("name: Bluey\n")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and f"{bad}:1:messages: must end with an assistant message" in result.stderr


def test_fact_pairs_capped_per_fact_in_conversation_order(tmp_path):
    rows = [
        chat("who's your dad?", "My dad is Bandit!"),
        chat("and Bingo?", "She's four and Dad is Bandit."),
        chat("dad again?", "Bandit, for real life."),
    ]
    data = write_jsonl(tmp_path / "chats.jsonl", rows)
    build = lambda output, cap: build_pairs(  # noqa: E731 (no model: templates and facts only)
        data, tmp_path / output, CARD, None, None, use_base=False, log=lambda _: None, max_per_fact=cap
    )
    assert build("all.jsonl", None)["facts_swapped"] == {"sister_age": 1, "dad_name": 2}
    capped = build("capped.jsonl", 1)
    # the second reply's sister_age swap comes first in card order; dad_name's one pair is the first reply's
    assert capped["facts_swapped"] == {"sister_age": 1, "dad_name": 1} and capped["max_per_fact"] == 1
    reasons = [p.reason for p in read_pairs(tmp_path / "capped.jsonl")]
    assert reasons == [
        "contradicts card fact dad_name: 'Bandit' -> 'Rusty'",
        'contradicts card fact sister_age: "she\'s four" -> "she\'s six"',
    ]
    # with the cap 0 every fact is passed over
    assert build("none.jsonl", 0)["by_source"]["fact"] == 0
