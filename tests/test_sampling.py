"""Sampling candidates: temperature, top-k, top-p over the kept k, min-p; the page's sampling.js keeps the same ids."""

import json
import shutil
import subprocess
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_bluey.sampling import candidates, make_repetition_penalty, make_sampler

WEB = Path(__file__).resolve().parent.parent / "mlx_bluey" / "web"


def kept(logits: list[float], temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> list[int]:
    ids, values = candidates(mx.array([logits]), temperature, top_k, top_p, min_p)
    return [i for i, v in zip(ids[0].tolist(), values[0].tolist()) if v != -float("inf")]


# probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625 at temperature 1 (log2 steps), ids shuffled
LOGITS = [np.log(0.0625), np.log(0.25), np.log(0.5), np.log(0.0625) - 1e-6, np.log(0.125)]


def test_filters_one_by_one():
    assert kept(LOGITS) == [2, 1, 4, 0, 3]  # nothing off: every id, best first
    assert kept(LOGITS, top_k=2) == [2, 1]
    assert kept(LOGITS, top_p=0.5) == [2]  # the mass before id 1 is 0.5: not under 0.5
    assert kept(LOGITS, top_p=0.6) == [2, 1]
    assert kept(LOGITS, top_p=0.9) == [2, 1, 4, 0]  # 0.875 before id 0
    assert kept(LOGITS, min_p=0.25) == [2, 1, 4]  # p >= 0.25 x 0.5


def test_top_p_renormalises_over_top_k():
    # top-2 keeps 0.5 and 0.25, renormalised 2/3 and 1/3: top-p 0.6 keeps only the best
    assert kept(LOGITS, top_k=2, top_p=0.6) == [2]


def test_temperature_comes_first():
    # at temperature 2 the probabilities flatten (sqrt of each, renormalised): top-p 0.6 needs three
    assert kept(LOGITS, temperature=2.0, top_p=0.6) == [2, 1, 4]


def test_sampler_draws_only_candidates_and_greedy_is_argmax():
    mx.random.seed(0)
    sampler = make_sampler(0.7, top_p=0.9, top_k=3, min_p=0.0)
    logprobs = mx.array([LOGITS] * 400)
    draws = set(sampler(logprobs).tolist())
    allowed = set(kept(LOGITS, temperature=0.7, top_k=3, top_p=0.9))
    assert draws <= allowed and len(draws) > 1
    assert make_sampler(0.0, 0.9, 3, 0.0)(mx.array([LOGITS])).tolist() == [2]


@pytest.mark.skipif(shutil.which("node") is None, reason="node (installed with the page's npm packages)")
def test_the_page_keeps_the_same_candidates():
    rng = np.random.default_rng(0)
    cases = [
        (rng.normal(0, 3, 300).astype(np.float32).tolist(), k, p, m)
        for k, p, m in [(64, 0.95, 0.0), (10, 0.5, 0.0), (0, 0.9, 0.0), (64, 1.0, 0.05), (5, 0.99, 0.1)]
        for _ in range(4)
    ]
    # keptIds, and what the page's logits processor leaves of the logits (-Infinity, null in JSON, elsewhere)
    script = (
        "import { keptIds, makeNucleusProcessor } from " + json.dumps((WEB / "sampling.js").as_uri()) + ";"
        "let input = ''; process.stdin.on('data', (d) => input += d); process.stdin.on('end', () => {"
        "console.log(JSON.stringify(JSON.parse(input).map(([l, k, p, m]) => [keptIds(Float32Array.from(l), k, p, m),"
        "Array.from(makeNucleusProcessor(class {}, k, p, m)._call([[0]], [{data: Float32Array.from(l)}])[0].data)]"
        ")));});"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
    )
    page, processed = zip(*json.loads(result.stdout))
    ours = [kept(logits, top_k=k, top_p=p, min_p=m) for logits, k, p, m in cases]
    assert list(page) == ours
    for (logits, *_), ids, after in zip(cases, ours, processed):
        assert [i for i, x in enumerate(after) if x is not None] == sorted(ids)
        assert [after[i] for i in ids] == np.float32(logits)[ids].tolist()  # the kept logits, unchanged
    assert {len(x) for x in ours} != {1}  # the cases keep different numbers of candidates


@pytest.mark.skipif(shutil.which("node") is None, reason="node (installed with the page's npm packages)")
def test_the_page_penalises_repeats_as_the_cli():
    """sampling.js' processor == make_repetition_penalty: the reply's last 64 tokens, the prompt left out."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, 200).astype(np.float32)
    prompt = rng.integers(0, 100, 70).tolist()  # ids 0-99
    history = prompt + rng.integers(50, 200, 150).tolist()  # a reply longer than the window, some prompt ids in it
    expected = make_repetition_penalty(1.1, 64, len(prompt))(mx.array(history), mx.array(logits[None]))[0]
    script = (
        "import { makeRepetitionProcessor } from " + json.dumps((WEB / "sampling.js").as_uri()) + ";"
        "let input = ''; process.stdin.on('data', (d) => input += d); process.stdin.on('end', () => {"
        "const [logits, ids, start] = JSON.parse(input);"
        "const processor = makeRepetitionProcessor(class {}, 1.1, 64, start);"
        "const out = processor._call([ids.map(BigInt)], [{ data: Float32Array.from(logits) }]);"
        "console.log(JSON.stringify(Array.from(out[0].data)));});"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=json.dumps([logits.tolist(), history, len(prompt)]),
        capture_output=True,
        text=True,
        check=True,
    )
    page = np.array(json.loads(result.stdout), dtype=np.float32)
    changed = np.flatnonzero(page != logits)
    assert sorted(changed.tolist()) == sorted(set(history[-64:]))  # the reply's window only, each id once
    assert set(prompt) - set(history[-64:])  # prompt ids the window lacks, left alone
    np.testing.assert_allclose(page, np.array(expected), rtol=1e-6)


def test_repetition_penalty_is_mlx_lms_on_the_reply_alone():
    from mlx_lm.sample_utils import make_repetition_penalty as mlx_lm_penalty

    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (1, 120)).astype(np.float32)
    prompt = rng.integers(0, 120, 80).tolist()
    reply = rng.integers(0, 120, 30).tolist()
    ours = make_repetition_penalty(1.1, 64, len(prompt))(mx.array(prompt + reply), mx.array(logits))
    theirs = mlx_lm_penalty(1.1, 64)(mx.array(reply), mx.array(logits))  # mlx-lm's, handed the reply alone
    np.testing.assert_array_equal(np.array(ours), np.array(theirs))
    assert (
        np.array(ours)[0, sorted(set(prompt) - set(reply))].tolist()
        == logits[0, sorted(set(prompt) - set(reply))].tolist()
    )
    no_reply = make_repetition_penalty(1.1, 64, len(prompt))(mx.array(prompt), mx.array(logits))
    np.testing.assert_array_equal(np.array(no_reply), logits)  # the first token: nothing penalised
