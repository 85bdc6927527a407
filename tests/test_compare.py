"""mlx_bluey compare: paired differences with their noise, on hand-made evaluation results."""

import json

import pytest
from conftest import run_cli

from mlx_bluey import scorecard
from mlx_bluey.character import CharacterCard
from mlx_bluey.evaluate import score

CARD = CharacterCard(name="Bluey", voice_markers=["Mum"], break_character_markers=[])
TRAINING = [("hi", "Mum is here today, let's play.")]


def write_result(directory, texts_by_prompt, label):
    rows = [
        {
            "id": prompt,
            "kind": "identity",
            "expect": None,
            "sample": s,
            "prompt_text": "who are you?",
            "text": text,
            "finish_reason": "stop",
        }
        for prompt, texts in texts_by_prompt.items()
        for s, text in enumerate(texts)
    ]
    summary = score(rows, CARD, TRAINING)
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(
        json.dumps(
            {"command": f"mlx_bluey evaluate ({label})", "model": {"label": label}, "summary": summary, "rows": rows}
        )
    )
    return directory


def test_a_clear_difference_is_outside_the_noise_and_an_equal_one_is_not(tmp_path):
    prompts = [f"p{i}" for i in range(12)]
    base = write_result(
        tmp_path / "base", {p: ["As an AI language model, I can't.", "I am an AI assistant."] for p in prompts}, "base"
    )
    tuned = write_result(
        tmp_path / "tuned", {p: ["I'm Bluey! Mum says hi.", "Let's play, Mum!"] for p in prompts}, "tuned"
    )
    same = write_result(
        tmp_path / "same", {p: ["As an AI language model, I can't.", "I am an AI assistant."] for p in prompts}, "same"
    )
    out = tmp_path / "cmp"
    done = run_cli("compare", str(base), str(tuned), str(same), "--output", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "compare.json").read_text())
    tuned_vs_base, same_vs_base = (c["differences"] for c in report["comparisons"])
    assert tuned_vs_base["in_character"] == {
        "a": 0.0,
        "b": 1.0,
        "difference": 1.0,
        "low": 1.0,
        "high": 1.0,
        "outside_noise": True,
        "prompts": 12,
    }
    assert same_vs_base["in_character"]["difference"] == 0.0 and not same_vs_base["in_character"]["outside_noise"]
    assert "| in_character | +1.000 [+1.000, +1.000] | yes | run 2 |" in done.stdout
    assert "| in_character | +0.000 [+0.000, +0.000] | no | neither |" in done.stdout
    assert (out / "compare.png").stat().st_size > 0 and (out / "compare.md").exists()
    # example replies: the first two prompts of the kind, sample 0 of each run, with the checks it failed
    assert [e["id"] for e in report["examples"]] == ["p0", "p1"]
    first = report["examples"][0]["replies"]
    assert first[1] == {"text": "I'm Bluey! Mum says hi.", "failed": []}
    assert first[0] == {
        "text": "As an AI language model, I can't.",
        "failed": ["assistant talk: as an ai, language model"],
    }
    assert "- run 2: I'm Bluey! Mum says hi." in (out / "compare.md").read_text()


def test_paired_difference_uses_only_the_prompts_both_runs_answered():
    figure = next(f for f in scorecard.FIGURES if f.name == "complete")
    a = [{"id": "x", "complete": True}, {"id": "y", "complete": False}]
    b = [{"id": "x", "complete": False}, {"id": "z", "complete": True}]
    result = scorecard.paired_difference(a, b, figure, {}, resamples=50)
    assert (result["a"], result["b"], result["difference"], result["prompts"]) == (1.0, 0.0, -1.0, 1)


def test_results_from_before_the_headline_figures_are_refused(tmp_path):
    from mlx_bluey.compare import CompareError, compare

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps({"summary": {"completeness": {}}, "rows": []}))
    with pytest.raises(CompareError, match=r"old/results.json: made before the headline figures existed"):
        compare([tmp_path / "old", tmp_path / "old"])
    with pytest.raises(CompareError, match=r"missing/results.json: not found"):
        compare([tmp_path / "missing", tmp_path / "old"])
