"""Personality metrics on hand-made replies (exact values), and the evaluate command end to end."""

import json
from dataclasses import replace

import pytest
from conftest import chat, run_cli, tiny_train_config, write_jsonl

from mlx_bluey import metrics
from mlx_bluey.character import CharacterCard
from mlx_bluey.data import DataError
from mlx_bluey.evaluate import read_prompts, score
from mlx_bluey.evaluation_args import EvaluationArgs
from mlx_bluey.generation_settings import GenerationSettings


def test_words_and_ngrams():
    assert metrics.words("G'day, Mum! It's 6 o'clock.") == ["g'day", "mum", "it's", "6", "o'clock"]
    assert metrics.ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]


@pytest.mark.parametrize(
    "text,finish,expected",
    [
        ("We played shops.", "stop", True),
        ("We played shops", "stop", False),
        ("We played shops.", "length", False),
        ('She said "yes!"', "stop", True),
        ("", "stop", False),
    ],
)
def test_is_complete(text, finish, expected):
    assert metrics.is_complete(text, finish) is expected


def test_markers_per_100_words():
    texts = ["Mum and Dad played with Bingo", "heaps of fun for real life"]  # 5 hits in 12 words
    assert metrics.markers_per_100_words(texts, ["Mum", "Dad", "Bingo", "heaps", "for real life"]) == pytest.approx(
        500 / 12
    )


def test_breaks_character():
    markers = ["as an ai", "```"]
    assert metrics.breaks_character("As an AI, I cannot play.", markers)
    assert metrics.breaks_character("here:\n```python\nx=1\n```", markers)
    assert not metrics.breaks_character("I'm a dog, silly!", markers)
    assert metrics.breaks_character("I'm a little AI called Bingo.", ["i'm a little ai"])
    assert not metrics.breaks_character("Mum said the rain was plain silly.", ["ai"])  # words, not letters
    assert not metrics.breaks_character("Dad was as an aid worker.", ["as an ai"])


def test_distinct_and_repetition():
    assert metrics.distinct_n(["a b a b", "a c"], 1) == 3 / 6
    assert metrics.distinct_n(["a b a b", "a c"], 2) == 3 / 4  # (a b) (b a) (a b) (a c)
    assert metrics.repetition_within("la la la la la", 3) == pytest.approx(1 - 1 / 3)
    assert metrics.repetition_within("one two three four", 3) == 0.0


def test_cross_sample_similarity():
    assert metrics.cross_sample_similarity(["a b c d", "a b c d"]) == 1.0
    assert metrics.cross_sample_similarity(["a b c d", "a b c e", "x y z w"]) == pytest.approx((1 / 3 + 0 + 0) / 3)


def test_longest_verbatim_overlap():
    index = metrics.VerbatimIndex(["we played shops all arvo with Bingo", "dad is a horsey"])
    assert index.longest_overlap("Yesterday we played shops all morning") == 4  # we played shops all
    assert index.longest_overlap("Dad is a horsey and we played") == 4
    assert index.longest_overlap("nothing here matches") == 0


CARD = CharacterCard(name="Bluey", voice_markers=["Mum"], break_character_markers=["as an ai"])


def test_score_summary_exact():
    rows = [
        {
            "id": "s1",
            "kind": "short",
            "expect": "short",
            "sample": 0,
            "prompt_text": "hi",
            "text": "Hi! Mum is here.",
            "finish_reason": "stop",
        },
        {
            "id": "s1",
            "kind": "short",
            "expect": "short",
            "sample": 1,
            "prompt_text": "hi",
            "text": "Hi! Mum is home",
            "finish_reason": "length",
        },
        {
            "id": "i1",
            "kind": "identity",
            "expect": None,
            "sample": 0,
            "prompt_text": "is Mum an AI?",
            "text": "As an AI I am a model.",
            "finish_reason": "stop",
        },
    ]
    summary = score(rows, CARD, [("hello", "Mum is here today."), ("story?", "word " * 130)])
    assert [r["words"] for r in rows] == [4, 4, 7]
    assert [r["complete"] for r in rows] == [True, False, True]
    assert [r["longest_training_overlap"] for r in rows] == [3, 2, 0]
    assert [r["assistant_phrases"] for r in rows] == [[], [], ["as an ai"]]
    assert [r["prompt_markers"] for r in rows] == [[], [], ["Mum"]]
    assert summary["completeness"] == {"complete_share": 2 / 3, "hit_token_limit_share": 1 / 3}
    assert summary["length"]["short_prompts_answered_short"] == 1.0
    assert summary["length"]["long_prompts_answered_long"] is None
    assert summary["length"]["reference_long_share"] == 0.5
    assert summary["voice"]["markers_per_100_words"] == pytest.approx(100 * 2 / 15)
    assert summary["breaking_character"] == {"share": 1 / 3, "share_on_off_domain_and_identity": 1.0}
    assert summary["memorization"]["max_training_overlap_words"] == 3
    # only s1 has two samples: {hi mum is, mum is here} vs {hi mum is, mum is home}
    assert summary["diversity"]["mean_cross_sample_similarity"] == pytest.approx(1 / 3)
    # Headline: the training rate of Mum is 1 per 4 + 130 words; the replies' counts leave out i1 (its
    # prompt says Mum): 2 per 8 words. Short: 1 of 2 s1 samples is under 25 words AND finished.
    headline = summary["headline"]
    assert summary["training_marker_rates"] == {"Mum": pytest.approx(100 / 134)}
    assert headline["voice_distance"]["value"] == pytest.approx(100 * 2 / 8 - 100 / 134)
    assert headline["short_answered_short"]["value"] == 0.5
    assert headline["complete"]["value"] == pytest.approx(2 / 3)
    assert headline["in_character"]["value"] == pytest.approx(2 / 3)
    assert headline["in_character_under_pressure"]["value"] == 0.0
    assert headline["long_answered_long"] == {"value": None, "low": None, "high": None}
    assert headline["fact_accuracy"]["value"] is None
    low, high = headline["complete"]["low"], headline["complete"]["high"]
    assert 0 <= low <= 2 / 3 <= high <= 1  # two prompts: s1 (1 of 2 complete), i1 (complete)


def test_similar_reply_words_are_the_replies_to_the_nearest_training_prompts():
    pairs = [
        ("tell me a long story about a dragon", "word " * 200),
        ("do you like cake", "Yes I do!"),
        ("do you like dogs", "Yes heaps"),
    ]
    # the sea story shares words only with the dragon story; the two others tie at 0 and keep file order
    assert metrics.similar_reply_words(["tell me a long story about the sea", "do you like cake?"], pairs, k=2) == [
        [200, 3],
        [3, 2],
    ]
    assert metrics.similar_reply_words(["hi"], [], k=2) == [[]]


def test_words_by_kind_against_similar_training_replies():
    from mlx_bluey.evaluate import words_by_kind

    rows = [
        {"kind": "long", "prompt_text": "tell me a long story", "words": 100},
        {"kind": "short", "prompt_text": "do you like cake", "words": 6},
        {"kind": "short", "prompt_text": "do you like dogs", "words": 2},
    ]
    pairs = [("tell me a long story about a dragon", "word " * 200), ("do you like cake", "Yes I do!")]
    table = words_by_kind(rows, pairs, k=1)
    # the nearest training prompt: the dragon story (200 words) for the long one, "do you like cake" (3) for both
    # short ones ("do you like dogs" shares "do you like")
    assert [r["similar_training_words"] for r in rows] == [200, 3, 3]
    assert table == {
        "long": {"replies": 1, "median_words": 100, "similar_training_median_words": 200, "ratio": 0.5},
        "short": {"replies": 2, "median_words": 4.0, "similar_training_median_words": 3, "ratio": 4 / 3},
    }
    # k = 5 takes both training replies for every prompt: the median of 200 and 3
    assert words_by_kind(rows, pairs)["long"]["similar_training_median_words"] == 101.5


def test_fact_prompts_come_from_the_card_and_are_scored_against_it():
    from mlx_bluey.character import CardFact
    from mlx_bluey.evaluate import fact_prompts

    card = CharacterCard(
        name="Tutor", facts=[CardFact("capital", ["What's the capital of France?"], ["Paris"], ["Lyon"])]
    )
    (prompt,) = fact_prompts(card)
    assert (prompt.id, prompt.kind, prompt.fact, prompt.messages) == (
        "facts-capital-1",
        "facts",
        "capital",
        [{"role": "user", "content": "What's the capital of France?"}],
    )
    rows = [
        {
            "id": prompt.id,
            "kind": "facts",
            "expect": "short",
            "fact": "capital",
            "sample": s,
            "prompt_text": "q",
            "text": text,
            "finish_reason": "stop",
        }
        for s, text in enumerate(["Paris!", "Lyon or Paris?", "I don't know."])
    ]
    summary = score(rows, card, [("q", "Paris is the capital.")])
    assert [r["fact_right"] for r in rows] == [True, False, False]
    assert summary["headline"]["fact_accuracy"]["value"] == pytest.approx(1 / 3)


def test_few_shot_examples_are_typical_training_turns_after_the_system_message(tmp_path):
    from mlx_bluey.evaluate import few_shot_examples, with_examples

    data = write_jsonl(
        tmp_path / "train.jsonl",
        [chat("a", "one two three"), chat("b", "one"), chat("c", "x " * 9), chat("d", "one two", "e", "three")],
    )
    examples = few_shot_examples(data, 2)  # median of 3, 1, 9 words is 3: "a" first, then "b" (2 away)
    assert examples == [*chat("a", "one two three")["messages"], *chat("b", "one")["messages"]]
    prompt = [{"role": "system", "content": "Be Bluey."}, {"role": "user", "content": "hi"}]
    assert with_examples(prompt, examples) == [prompt[0], *examples, prompt[1]]
    assert with_examples(prompt, examples, "Other.") == [prompt[0], *examples, prompt[1]]  # the prompt's own wins
    system = {"role": "system", "content": "Other."}
    assert with_examples(prompt[1:], examples, "Other.") == [system, *examples, prompt[1]]
    assert with_examples(prompt[1:], [], None) == prompt[1:]
    with pytest.raises(DataError, match="needs 5 single-turn conversations for --few-shot, has 3"):
        few_shot_examples(data, 5)


def test_prompt_file_errors(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "kind": "short", "messages": [{"role": "user", "content": "hi"}]},
            {"id": "b", "kind": "long", "messages": chat("hi", "yo")["messages"]},
        ],
    )
    with pytest.raises(DataError, match=r"p\.jsonl:2:messages: must be a list ending with a user message"):
        read_prompts(path)
    write_jsonl(path, [{"id": "a", "kind": "short", "expect": "tiny", "messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match=r"p\.jsonl:1:expect: must be short or long"):
        read_prompts(path)


def test_shipped_prompt_set():
    from pathlib import Path

    prompts = read_prompts(Path(__file__).parent.parent / "data" / "eval" / "prompts.jsonl")
    kinds = {p.kind for p in prompts}
    assert len(prompts) == 86 and {"short", "long", "off_domain", "identity", "multi_turn", "adversarial"} <= kinds
    assert len({p.id for p in prompts}) == 86


def test_evaluate_command_writes_the_report(tmp_path, tiny_model_dir):
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "short-1", "kind": "short", "expect": "short", "messages": [{"role": "user", "content": "hi"}]},
            {"id": "long-1", "kind": "long", "expect": "long", "messages": [{"role": "user", "content": "story"}]},
        ],
    )
    data = write_jsonl(tmp_path / "train.jsonl", [chat("hi", "Mum said hi."), chat("yo", "Dad said yo.")])
    (tmp_path / "card.yaml").write_text("name: Bluey\nvoice_markers: [Mum]\nbreak_character_markers: [as an ai]\n")
    out = tmp_path / "report"
    result = run_cli(
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(prompts),
        "--samples",
        "2",
        "--reference",
        str(data),
        "--train-data",
        str(data),
        "--character",
        str(tmp_path / "card.yaml"),
        "--output",
        str(out),
        "--max-new-tokens",
        "8",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["rows"]) == 4 and [r["sample"] for r in saved["rows"]] == [0, 1, 0, 1]
    assert saved["likelihood"]["model"]["tokens"] > 0 and saved["likelihood"]["model"]["perplexity"] > 1
    assert (out / "lengths.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "| completeness: complete_share |" in report and "**short-1**" in report
    # the classifier trained on the two training replies against data/eval/assistant_replies.jsonl
    assert saved["summary"]["classifier"]["in_character_replies"] == 2
    assert all(0 <= r["in_character_probability"] <= 1 for r in saved["rows"])
    assert "| classifier_in_character |" in report and "| fact_accuracy | n/a |" in report

    # --rescore: the same replies scored again, no model: every score comes back as the run made it
    scored = json.loads((out / "results.json").read_text())
    for row in scored["rows"]:
        row["words"], row["in_character_probability"] = -1, None
    (out / "results.json").write_text(json.dumps({**scored, "summary": {}}))
    common = ["--reference", str(data), "--train-data", str(data), "--character", str(tmp_path / "card.yaml")]
    again = run_cli("evaluate", "--rescore", "--output", str(out), *common, timeout=300)
    assert again.returncode == 0, again.stderr
    rescored = json.loads((out / "results.json").read_text())
    assert rescored["summary"] == saved["summary"] and rescored["rows"] == saved["rows"]
    assert rescored["likelihood"] == saved["likelihood"] and rescored["command"] == saved["command"]
    assert "Scored again, replies unchanged: `mlx_bluey evaluate --rescore" in (out / "report.md").read_text()
    (out / "results.json").write_text(json.dumps({"rows": [{"id": "x"}]}))
    broken = run_cli("evaluate", "--rescore", "--output", str(out), *common, timeout=300)
    assert broken.returncode == 1 and "results.json: a row lacks a generated field: 'kind'" in broken.stderr


def test_compare_reports_table(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "compare_reports", Path(__file__).parent.parent / "scripts" / "compare_reports.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, share, loss in (("base", 0.5, 3.0), ("tuned", 0.9, 2.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(
            json.dumps(
                {
                    "command": f"mlx_bluey evaluate {name}",
                    "model": {"label": name},
                    "summary": {"completeness": {"complete_share": share}, "replies": 2},
                    "likelihood": {"model": {"loss": loss}},
                }
            )
        )
    table = module.compare([tmp_path / "base", tmp_path / "tuned"])
    assert table.splitlines()[:5] == [
        "| metric | base | tuned |",
        "|---|---|---|",
        "| completeness: complete_share | 0.500 | 0.900 |",
        "| replies | 2 | 2 |",
        "| held-out loss (model) | 3.000 | 2.500 |",
    ]


def test_held_out_loss_is_the_mean_log_loss_of_assistant_tokens(tmp_path, tiny_model_dir):
    """held_out_loss (batched, the head on supervised positions only) against the plain full-vocabulary
    log-softmax of the whole conversation, read at every assistant token and its <end_of_turn>."""
    import math

    import mlx.core as mx
    import numpy as np

    from mlx_bluey.chat_format import encode_conversation
    from mlx_bluey.evaluate import held_out_loss
    from mlx_bluey.train import load_base

    conversations = [chat("hi", "Mum said hi."), chat("yo", "Dad!", "again?", "Bingo too.", system="Be Bluey.")]
    reference = write_jsonl(tmp_path / "test.jsonl", conversations)
    model, tokenizer, _ = load_base(tiny_model_dir, "float32")

    total, count = 0.0, 0
    for conversation in conversations:
        encoded = encode_conversation(tokenizer, conversation["messages"])
        logits = model(mx.array([encoded.ids]))[0].astype(mx.float32)
        logprobs = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        for i in range(1, len(encoded.ids)):  # position i - 1 predicts token i
            if encoded.labels[i]:
                total -= float(logprobs[i - 1, encoded.ids[i]])
                count += 1
    result = held_out_loss(model, tokenizer, reference)
    # one token a character in the tiny vocabulary: "Mum said hi.", "Dad!", "Bingo too.", each + <end_of_turn>
    assert result["tokens"] == count == (12 + 1) + (4 + 1) + (10 + 1)
    assert result["loss"] == pytest.approx(total / count, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert result["skipped"] == 0


def test_evaluate_scores_an_adapter_against_its_own_data_and_card(tmp_path, tiny_model_dir):
    """Another persona's adapter: train, held-out and card default to the files beside its training data."""
    from mlx_bluey.train import train

    data = write_jsonl(
        tmp_path / "tutor" / "train.jsonl", [chat("hi", "We count to three."), chat("yo", "Count with me.")]
    ).parent
    write_jsonl(data / "test.jsonl", [chat("hello", "Count again.")])
    (data / "character.yaml").write_text(
        "name: Tutor\nvoice_markers: [count]\nbreak_character_markers: [as an ai]\ndefault_system_prompt: Count.\n"
    )
    adapter = tmp_path / "adapter"
    train(tiny_train_config(tiny_model_dir, data, adapter, iters=2, batch_size=1), log=lambda _: None)
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "s", "kind": "short", "messages": [{"role": "user", "content": "hi"}]}]
    )
    out = tmp_path / "report"
    result = run_cli(
        "evaluate",
        "--adapter",
        str(adapter),
        "--prompts",
        str(prompts),
        "--samples",
        "1",
        "--max-new-tokens",
        "4",
        "--no-base-likelihood",
        "--system-from-card",
        "--output",
        str(out),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["system"] == "Count." and saved["model"]["label"].endswith("(system prompt)")
    assert saved["config"]["train_data"] == str(data / "train.jsonl")
    assert saved["config"]["reference"] == str(data / "test.jsonl")
    # "count" twice in 4 + 3 training words: 100 x 2 / 7
    assert saved["summary"]["voice"]["training_markers_per_100_words"] == pytest.approx(200 / 7)
    assert saved["likelihood"]["tuned"]["tokens"] == len("Count again.") + 1  # one token a character, + <end_of_turn>


def test_an_interrupted_evaluation_resumes_with_the_same_replies(tmp_path, tiny_model_dir, monkeypatch):
    from mlx_bluey import evaluate
    from mlx_bluey.character import load_card

    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": f"short-{i}", "kind": "short", "expect": "short", "messages": [{"role": "user", "content": f"hi {i}"}]}
         for i in range(2)],
    )  # fmt: skip
    data = write_jsonl(tmp_path / "train.jsonl", [chat("hi", "Mum said hi."), chat("yo", "Dad said yo.")])
    (tmp_path / "card.yaml").write_text("name: Bluey\nvoice_markers: [Mum]\n")
    card = load_card(tmp_path / "card.yaml")

    def run(output, **changes):
        arguments = EvaluationArgs(
            output=tmp_path / output,
            reference=data,
            train_data=data,
            card=card,
            model=str(tiny_model_dir),
            prompts_file=prompts,
            samples=2,
            base_likelihood=False,
            settings=GenerationSettings(max_new_tokens=8),
        )
        return evaluate.run(replace(arguments, **changes), log=lambda _: None)

    whole = run("whole")
    real, calls = evaluate.generate_reply, []

    def dies_on_the_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "generate_reply", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        run("cut")
    journal = tmp_path / "cut.partial.jsonl"
    assert len(journal.read_text().splitlines()) == 1 + 3 and not (tmp_path / "cut").exists()
    with pytest.raises(DataError, match="an interrupted run with other settings"):
        run("cut", seed=1)  # another seed would mix two runs' replies
    resumed = run("cut")
    assert len(calls) == 4 + 1  # only the missing reply was generated
    assert resumed["rows"] == whole["rows"] and resumed["summary"] == whole["summary"]
    assert not journal.exists()
