"""The evaluation prompts stay held out: no training, validation or test user turn, exact or near.

"Near" is the similarity `mlx_bluey data split` keeps together: word 3-gram Jaccard >= 0.5. The
card's fact questions are evaluation prompts too. Adding a training question to the set fails here;
`mlx_bluey data validate --against-eval data/eval/prompts.jsonl` runs the same check (data_validate.py)
on a draft before it joins.
"""

from pathlib import Path

from mlx_bluey.character import load_card
from mlx_bluey.data import Conversation, read_jsonl
from mlx_bluey.data_validate import held_out_problems
from mlx_bluey.evaluate import EvalPrompt, all_prompts, fact_prompts

ROOT = Path(__file__).parent.parent
DATA = ROOT / "data" / "bluey"


def _data_files() -> list[Path]:
    # the split, every raw part (a conversation in raw/ but not in the split would be a bug of `data split`) and
    # the drafts waiting to join them
    files = [DATA / f"{name}.jsonl" for name in ("train", "valid", "test")] + sorted((DATA / "raw").glob("*.jsonl"))
    return files + sorted((DATA / "drafts").glob("*.jsonl"))


def test_no_evaluation_prompt_is_a_training_prompt_or_its_near_duplicate():
    conversations = [c for path in _data_files() for c in read_jsonl(path)]
    prompts = all_prompts(ROOT / "data" / "eval" / "prompts.jsonl", load_card(DATA / "character.yaml"))
    assert len(prompts) == 86 + 33  # the file, and the card's 10 facts with 33 questions
    assert [str(p) for p in held_out_problems(conversations, prompts)] == []


def test_the_card_fact_questions_are_worded_apart_from_every_training_turn():
    # stricter than the held-out rule (0.5): the card's comment promises under 0.3, the bar the fact data
    # (raw/part8, part12) was written to, so a fact score measures the fact, not a remembered wording
    conversations = [c for path in _data_files() for c in read_jsonl(path)]
    questions = fact_prompts(load_card(DATA / "character.yaml"))
    assert [str(p) for p in held_out_problems(conversations, questions, threshold=0.3)] == []


def chat(*user_turns: str, source: str = "t.jsonl:1") -> Conversation:
    return Conversation(
        [m for text in user_turns for m in ({"role": "user", "content": text}, {"role": "assistant", "content": "ok"})],
        source,
    )


def test_the_check_catches_a_copied_or_reworded_evaluation_prompt():
    prompts = [
        EvalPrompt("grow-up", "open", [{"role": "user", "content": "What do you want to be when you grow up?"}]),
        EvalPrompt("sydney", "facts", [{"role": "user", "content": "Do you live in Sydney?"}], "short", "home_city"),
    ]
    conversations = [
        chat("hi", "  DO YOU LIVE   in sydney?", source="a.jsonl:3"),  # same words, other case and spacing
        chat("What do you want to be when you grow up", source="a.jsonl:4"),  # no question mark
        # the prompt's 8 word 3-grams and 2 of its own ("so what do", "grow up bluey"): 8 / 10 = 0.80
        chat("so what do you want to be when you grow up, Bluey?", source="a.jsonl:5"),
        chat("Tell me about the moon and the stars tonight", source="a.jsonl:6"),
    ]
    assert [str(p) for p in held_out_problems(conversations, prompts)] == [
        "a.jsonl:3:messages[2].content: a copy of evaluation prompt sydney: keep the evaluation held out",
        "a.jsonl:4:messages[0].content: a near-duplicate (word 3-gram Jaccard 1.00) of evaluation prompt grow-up: "
        "keep the evaluation held out",
        "a.jsonl:5:messages[0].content: a near-duplicate (word 3-gram Jaccard 0.80) of evaluation prompt grow-up: "
        "keep the evaluation held out",
    ]
