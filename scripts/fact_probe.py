"""Which answer each adapter opens with to the card's fact questions, by probability rather than by sampling.

    .venv/bin/python scripts/fact_probe.py --adapter adapters/bluey-270m-sft-pressure-quarter \\
        --adapter adapters/bluey-270m-dpo-nll --output reports/fact-probe

`mlx_bluey evaluate` samples one to three replies per fact question, so a fact is right or wrong by the luck of
a draw. This script asks, for every question of the card's facts (the ones evaluate asks), how likely the
reply is to open with each candidate answer: the log-probability of the reply "Four!" (the answer, capitalised,
then "!", the short-reply opening of the training data), after the adapter's trained system message and the
question, through the training chat template. Candidates: the fact's accepted answers and its other `answers`
(written as words, digits left out); a fact without `answers` whose accepted answer is a number word gets the
other number words two to eight (sister_age); a fact with one candidate only is left out. `share_right` is the
accepted candidates' share of the candidates' summed probability, so 0.5 is a coin toss between the right
answer and the wrong ones together, and `top` is the most likely opening. Writes OUTPUT/fact_probe.json and
OUTPUT/fact_probe.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlx_bluey.bench_record import command_line, machine, table, write_record  # noqa: E402  (after the path)
from mlx_bluey.character import card_for_adapter, load_card  # noqa: E402 (after the path, as above)
from mlx_bluey.chat_format import Encoded  # noqa: E402 (after the path, as above)
from mlx_bluey.generation import load_for_generation  # noqa: E402 (after the path, as above)
from mlx_bluey.preference import encode_reply, reply_logprobs  # noqa: E402 (after the path, as above)
from mlx_bluey.system_message import add_system, trained_system  # noqa: E402 (after the path, as above)

NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight"]


def candidates(fact) -> tuple[list[str], list[str]]:
    """(accepted, other) answer words for a fact's questions; digits are left out (their words stand for them)."""
    words = lambda items: [a for a in items if not a.isdigit()]  # noqa: E731 (a one-line helper)
    accepted = words(fact.accept)
    other = words(fact.answers)
    if not other and any(a.lower() in NUMBER_WORDS for a in accepted):
        other = [n for n in NUMBER_WORDS if n not in {a.lower() for a in accepted}]
    return accepted, other


def opening(answer: str) -> str:
    return answer[:1].upper() + answer[1:] + "!"


def opening_logprobs(model, tokenizer, prompt: list[dict], texts: list[str]) -> list[float]:
    """Summed log-probability of each reply in `texts` after `prompt`, its tokens only: the preference
    stage's reply log-probability (preference.reply_logprobs, one batch) without the <end_of_turn> label."""
    rows = []
    for text in texts:
        encoded = encode_reply(tokenizer, prompt, text)
        last = max(i for i, label in enumerate(encoded.labels) if label)  # <end_of_turn>
        rows.append(Encoded(encoded.ids, [label and i != last for i, label in enumerate(encoded.labels)]))
    sums, _ = reply_logprobs(model, rows)
    return sums.tolist()


def probe(model, tokenizer, card, system: str | None) -> list[dict]:
    rows = []
    for fact in card.facts:
        accepted, other = candidates(fact)
        if not accepted or not other:
            continue
        for question in fact.questions:
            prompt = add_system([{"role": "user", "content": question}], system)
            answers = [*accepted, *other]
            scores = dict(zip(answers, opening_logprobs(model, tokenizer, prompt, [opening(a) for a in answers])))
            total = sum(math.exp(v) for v in scores.values())
            right = sum(math.exp(scores[a]) for a in accepted)
            top = max(scores, key=scores.get)
            rows.append(
                {"fact": fact.id, "question": question, "logprobs": scores, "share_right": right / total, "top": top}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", action="append", required=True, help="repeat for each adapter")
    parser.add_argument("--character", help="card (default: the one beside the first adapter's training data)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    card = load_card(args.character) if args.character else card_for_adapter(args.adapter[0])
    if card is None:
        parser.error(f"no character card beside {args.adapter[0]}'s training data: pass --character")
    results = {}
    for adapter in args.adapter:
        model, tokenizer, _ = load_for_generation(None, adapter, log=lambda _: None)
        model.eval()
        results[adapter] = probe(model, tokenizer, card, trained_system(adapter))
        print(adapter, [(r["fact"], round(r["share_right"], 3), r["top"]) for r in results[adapter]], flush=True)
    first = results[args.adapter[0]]
    header = ["question", "fact", *(f"`{Path(a).name}`" for a in args.adapter)]
    rows = [
        [
            r["question"],
            r["fact"],
            *(f"{results[a][i]['share_right']:.2f} ({results[a][i]['top']})" for a in args.adapter),
        ]
        for i, r in enumerate(first)
    ]
    record = {"command": command_line(), "machine": machine(), "results": results}
    text = write_record(
        Path(args.output),
        "fact_probe",
        record,
        "# Fact probe: the right answer's share of the candidate openings",
        'Each cell: the accepted answers\' share of the summed probability of the openings "Answer!" (the most '
        "likely in brackets), after the adapter's trained system message and the question.\n\n"
        + table(header, rows, "ll" + "r" * len(args.adapter)),
    )
    print(text)


if __name__ == "__main__":
    main()
