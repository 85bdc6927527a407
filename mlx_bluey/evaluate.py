"""`mlx_bluey evaluate`: does it sound like the character? Measured, offline, saved.

    mlx_bluey evaluate --adapter adapters/bluey-gemma-3-270m-embedded --output reports/eval-270m

For every prompt in the prompt file (data/eval/prompts.jsonl) it generates `samples` replies with
fixed seeds (sample s of every prompt uses seed `seed + s`, so two models see the same noise) through
the training chat template, then writes OUTPUT/results.json (every reply and every figure),
OUTPUT/report.md and OUTPUT/lengths.png. The figures are defined in metrics.py:
completeness, length by prompt kind against the training replies, voice markers per 100 words
against the training data's rate, breaking character, diversity, verbatim overlap with training
replies, and the held-out loss of the reference replies (test.jsonl) under the model.
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import metrics, scorecard
from .atomic import atomic_write_text
from .data import DataError, check_messages, json_lines, read_jsonl, unicode_problem
from .evaluation_args import LONG_REPLY_TOKENS, EvaluationArgs
from .generation import GenerationSettings, generate_reply
from .journal import Journal
from .plots import save_png
from .system_message import add_system, with_system
from .text import LONG_WORDS, SHORT_WORDS, count_markers

OVERLAP_ALARM_WORDS = 12  # a verbatim run this long is copying, not style
# Training prompts whose replies are a prompt's length reference: 5 gives a median that one odd
# neighbour cannot move far; more reaches for prompts that are no longer alike.
SIMILAR_PROMPTS = 5


@dataclass
class EvalPrompt:
    id: str
    kind: str
    messages: list[dict]
    expect: str | None = None  # "short" or "long" when the prompt asks for a length
    fact: str | None = None  # the character card's fact this prompt asks about (kind "facts")


def all_prompts(prompts_file: str | Path, card) -> list[EvalPrompt]:
    """The prompt file's prompts, then one per question of the card's facts."""
    prompts = read_prompts(prompts_file)
    taken = {p.id for p in prompts}
    for prompt in fact_prompts(card):
        if prompt.id in taken:
            raise DataError(str(prompts_file), f"id {prompt.id!r} is also a fact prompt of the character card")
        prompts.append(prompt)
    return prompts


def fact_prompts(card) -> list[EvalPrompt]:
    """One prompt per question of the card's facts: another persona's card brings its own."""
    return [
        EvalPrompt(f"facts-{fact.id}-{i + 1}", "facts", [{"role": "user", "content": question}], "short", fact.id)
        for fact in card.facts
        for i, question in enumerate(fact.questions)
    ]


def read_prompts(path: str | Path) -> list[EvalPrompt]:
    """Prompts end on a user message (the model answers it); errors name file, line and field."""
    path = Path(path)
    prompts, lines_by_id = [], {}
    for where, row in json_lines(path):
        if isinstance(row, DataError):
            raise row
        if not isinstance(row, dict):
            raise DataError(where, "expected a JSON object with id, kind and messages")
        for key in ("id", "kind"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"{where}:{key}", "required, a non-empty string")
            if problem := unicode_problem(row[key]):
                raise DataError(f"{where}:{key}", problem)
        # replies are grouped by id, so a repeated id would merge two prompts' samples
        if row["id"] in lines_by_id:
            raise DataError(f"{where}:id", f"{row['id']!r} is already used by {lines_by_id[row['id']]}")
        lines_by_id[row["id"]] = where
        if row.get("expect") not in (None, "short", "long"):
            raise DataError(f"{where}:expect", f"must be short or long, not {row['expect']!r}")
        messages = row.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not isinstance(messages[-1], dict)
            or messages[-1].get("role") != "user"
        ):
            raise DataError(f"{where}:messages", "must be a list ending with a user message")
        # the same checks as training data, on the conversation plus a stand-in reply
        check_messages({"messages": [*messages, {"role": "assistant", "content": "-"}]}, where)
        prompts.append(EvalPrompt(row["id"], row["kind"], messages, row.get("expect")))
    if not prompts:
        raise DataError(str(path), "no prompts in file")
    return prompts


def assistant_texts(path: str | Path) -> list[str]:
    return [m["content"] for c in read_jsonl(path) for m in c.messages if m["role"] == "assistant"]


def reply_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(the user turn before it, assistant reply) for every reply of a chat file."""
    pairs = []
    for conversation in read_jsonl(path):
        user = ""
        for message in conversation.messages:
            if message["role"] == "user":
                user = message["content"]
            elif message["role"] == "assistant":
                pairs.append((user, message["content"]))
    return pairs


def few_shot_examples(train_data: str | Path, count: int) -> list[dict]:
    """`count` single-turn training conversations whose replies are nearest the median length, as turns.

    Put before every prompt they make the untuned model a fair stand-in for "prompting instead of
    fine-tuning": it sees what a reply of this character looks like, without any training.
    """
    if count <= 0:
        return []
    single = [c.messages for c in read_jsonl(train_data) if [m["role"] for m in c.messages] == ["user", "assistant"]]
    if len(single) < count:
        raise DataError(str(train_data), f"needs {count} single-turn conversations for --few-shot, has {len(single)}")
    median = statistics.median(len(metrics.words(m[1]["content"])) for m in single)
    single.sort(key=lambda m: abs(len(metrics.words(m[1]["content"])) - median))
    return [message for conversation in single[:count] for message in conversation]


def with_examples(messages: list[dict], examples: list[dict], system: str | None = None) -> list[dict]:
    """The system message (the prompt's own, else `system` if given), then the example turns, then the
    prompt's own turns."""
    messages = add_system(messages, system)  # the one rule of which system message wins
    first = messages[:1] if messages and messages[0]["role"] == "system" else []
    return [*first, *examples, *messages[len(first) :]]


def generate_samples(
    model,
    tokenizer,
    prompts,
    samples: int,
    seed: int,
    settings: GenerationSettings,
    stop_ids,
    progress=None,
    long_reply_tokens: int = LONG_REPLY_TOKENS,
    examples: list[dict] = (),
    journal=None,
    system: str | None = None,
) -> list[dict]:
    """One row per prompt and sample. With a journal.Journal, rows an interrupted run already made are reused
    (each reply is seeded on its own, seed + sample, so they are the rows this run would make) and new ones
    are recorded as they come."""
    rows = []
    done = {(r["id"], r["sample"]): r for r in journal.records} if journal else {}
    for prompt in prompts:
        budget = max(settings.max_new_tokens, long_reply_tokens) if prompt.expect == "long" else settings.max_new_tokens
        messages = with_examples(prompt.messages, list(examples), system)
        for s in range(samples):
            if (prompt.id, s) in done:
                rows.append(done[(prompt.id, s)])
                if progress:
                    progress(1)
                continue
            reply = generate_reply(
                model, tokenizer, messages, replace(settings, seed=seed + s, max_new_tokens=budget), stop_ids
            )
            user_turns = [m["content"] for m in prompt.messages if m["role"] == "user"]
            rows.append(
                {
                    "id": prompt.id,
                    "kind": prompt.kind,
                    "expect": prompt.expect,
                    "fact": prompt.fact,
                    "sample": s,
                    "prompt_text": user_turns[-1],
                    "text": reply.text,
                    "tokens": reply.n_tokens,
                    "max_new_tokens": budget,
                    "finish_reason": reply.finish_reason,
                    "truncated": reply.truncated,
                }
            )
            if journal:
                journal.append(rows[-1])
            if progress:
                progress(1)
    return rows


def score_rows(rows: list[dict], card, training_replies: list[str], classifier=None) -> None:
    """Add each reply's own figures to its row, in place."""
    index = metrics.VerbatimIndex(training_replies)
    probabilities = classifier.probability([r["text"] for r in rows]) if classifier and rows else [None] * len(rows)
    facts = {fact.id: fact for fact in card.facts}
    for row in rows:
        text = row["text"]
        row["words"] = len(metrics.words(text))
        row["complete"] = metrics.is_complete(text, row["finish_reason"])
        row["breaks_character"] = metrics.breaks_character(text, card.break_character_markers)
        row["assistant_phrases"] = metrics.assistant_phrases(text, card.break_character_markers)
        row["markers"] = dict(count_markers(text, card.voice_markers))
        row["prompt_markers"] = sorted(count_markers(row["prompt_text"], card.voice_markers))
        fact = facts.get(row.get("fact"))
        row["fact_right"] = (
            metrics.states_fact(text, fact.accept, fact.reject, fact.answers, row["prompt_text"]) if fact else None
        )
        row["repetition_within"] = metrics.repetition_within(text)
        row["longest_training_overlap"] = index.longest_overlap(text)
    for row, probability in zip(rows, probabilities):
        row["in_character_probability"] = None if probability is None else round(float(probability), 4)


def words_by_kind(rows: list[dict], training_pairs: list[tuple[str, str]], k: int = SIMILAR_PROMPTS) -> dict[str, dict]:
    """Per prompt kind: median words of the replies, and of the training replies to the most similar
    training prompts (metrics.similar_reply_words, k per prompt, pooled over the kind).

    Each row gets its own reference too ("similar_training_words", the median of its neighbours).
    """
    neighbours = metrics.similar_reply_words([r["prompt_text"] for r in rows], training_pairs, k)
    for row, counts in zip(rows, neighbours):
        row["similar_training_words"] = statistics.median(counts) if counts else None
    table = {}
    for kind in sorted({r["kind"] for r in rows}):
        picked = [(r, counts) for r, counts in zip(rows, neighbours) if r["kind"] == kind]
        replies = statistics.median(r["words"] for r, _ in picked)
        pooled = [c for _, counts in picked for c in counts]
        training = statistics.median(pooled) if pooled else None
        table[kind] = {
            "replies": len(picked),
            "median_words": replies,
            "similar_training_median_words": training,
            "ratio": replies / training if training else None,
        }
    return table


def score(rows: list[dict], card, training_pairs: list[tuple[str, str]], classifier=None) -> dict:
    """Add per-reply figures to `rows` in place and return the summary (headline figures with intervals first)."""
    training_replies = [reply for _, reply in training_pairs]
    score_rows(rows, card, training_replies, classifier)
    texts = [r["text"] for r in rows]
    by_prompt: dict[str, list[str]] = {}
    for r in rows:
        by_prompt.setdefault(r["id"], []).append(r["text"])
    reference_words = [len(metrics.words(t)) for t in training_replies]
    share = lambda items, test: sum(map(test, items)) / len(items) if items else None  # noqa: E731 (a one-line helper local to this function)
    short = [r for r in rows if r["expect"] == "short"]
    long_ = [r for r in rows if r["expect"] == "long"]
    guarded = [r for r in rows if r["kind"] in ("off_domain", "identity")]
    reference = {"marker_rates": metrics.marker_rates(training_pairs, card.voice_markers)}
    return {
        "replies": len(rows),
        "headline": scorecard.headline(rows, reference),
        "training_marker_rates": reference["marker_rates"],
        "completeness": {
            "complete_share": share(rows, lambda r: r["complete"]),
            "hit_token_limit_share": share(rows, lambda r: r["finish_reason"] == "length"),
        },
        "length": {
            "median_words": statistics.median(r["words"] for r in rows),
            "mean_words": statistics.mean(r["words"] for r in rows),
            "by_kind": words_by_kind(rows, training_pairs),
            "reference_median_words": statistics.median(reference_words),
            "reference_short_share": share(reference_words, lambda w: w < SHORT_WORDS),
            "reference_long_share": share(reference_words, lambda w: w > LONG_WORDS),
            "short_prompts_answered_short": share(short, lambda r: r["words"] < SHORT_WORDS),
            "long_prompts_answered_long": share(long_, lambda r: r["words"] > LONG_WORDS),
        },
        "voice": {
            "markers_per_100_words": metrics.markers_per_100_words(texts, card.voice_markers),
            "training_markers_per_100_words": metrics.markers_per_100_words(training_replies, card.voice_markers),
        },
        "breaking_character": {
            "share": share(rows, lambda r: r["breaks_character"]),
            "share_on_off_domain_and_identity": share(guarded, lambda r: r["breaks_character"]),
        },
        "diversity": {
            "distinct_1": metrics.distinct_n(texts, 1),
            "distinct_2": metrics.distinct_n(texts, 2),
            "mean_repetition_within": statistics.mean(r["repetition_within"] for r in rows),
            "mean_cross_sample_similarity": (
                statistics.mean(metrics.cross_sample_similarity(v) for v in by_prompt.values() if len(v) > 1)
                if any(len(v) > 1 for v in by_prompt.values())
                else None
            ),
        },
        "memorization": {
            "max_training_overlap_words": max(r["longest_training_overlap"] for r in rows),
            "mean_training_overlap_words": statistics.mean(r["longest_training_overlap"] for r in rows),
            f"share_overlap_at_least_{OVERLAP_ALARM_WORDS}_words": share(
                rows, lambda r: r["longest_training_overlap"] >= OVERLAP_ALARM_WORDS
            ),
        },
    }


def reference_files(adapter, reference, train_data, character) -> tuple[str, str, str]:
    """(held-out file, training file, character card): the ones given, else those beside the adapter's
    training data (its manifest), else data/bluey's. Another persona is scored against its own card."""
    from .character import CARD_FILE, data_dir_for_adapter
    from .data_files import located

    data_dir = located(data_dir_for_adapter(adapter) or "data/bluey")
    return (
        reference or str(data_dir / "test.jsonl"),
        train_data or str(data_dir / "train.jsonl"),
        character or str(data_dir / CARD_FILE),
    )


def held_out_loss(
    model, tokenizer, reference: str | Path, max_seq_length: int = 2048, system: str | None = None
) -> dict:
    """Mean loss (nats per assistant token) and perplexity of the reference replies under the model, with the
    system message the replies are generated with first in every conversation that has none."""
    from .data import encode_dataset
    from .tuning import evaluate_loss

    dataset = encode_dataset(with_system(read_jsonl(reference), system), tokenizer, max_seq_length, "skip")
    loss = evaluate_loss(model, dataset, batch_size=1)
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": dataset.n_supervised, "skipped": len(dataset.skipped)}


def _log_headline(summary: dict, output, log) -> None:
    log(
        "; ".join(f"{name} {scorecard.format_figure(figure)}" for name, figure in summary["headline"].items())
        + f"; report: {Path(output) / 'report.md'}"
    )


def write_report(output: Path, result: dict) -> None:
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "results.json", json.dumps(result, indent=2))
    _lengths_chart(output / "lengths.png", result)
    atomic_write_text(output / "report.md", to_markdown(result))


def to_markdown(result: dict) -> str:
    s = result["summary"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731 (a one-line helper local to this function)
    lines = [
        f"# Evaluation: {result['model']['label']}",
        "",
        f"`{result['command']}`",
        "",
        *([f"Scored again, replies unchanged: `{result['rescored']}`", ""] if result.get("rescored") else []),
        f"{s['replies']} replies: {result['config']['samples']} samples x {result['config']['prompts']} prompts "
        f"from `{result['config']['prompts_file']}` and the card's facts, seeds {result['config']['seed']}..",
        "",
    ]
    if "headline" in s:
        lines += [
            "## Headline figures (95% bootstrap interval over prompts)",
            "",
            "| figure | value | what it counts |",
            "|---|---|---|",
        ]
        described = {f.name: f for f in scorecard.FIGURES}
        for name, figure in s["headline"].items():
            better = "higher" if described[name].higher_is_better else "lower"
            lines.append(
                f"| {name} | {scorecard.format_figure(figure)} | {described[name].description} ({better} is better) |"
            )
        lines += ["", "## Details", ""]
    lines += ["| metric | value |", "|---|---|"]
    for group, values in s.items():
        if group == "headline":
            continue
        if isinstance(values, dict):
            for key, value in values.items():
                if key == "by_kind":
                    continue  # its own table below
                if isinstance(value, dict):
                    value = ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
                lines.append(f"| {group}: {key} | {fmt(value)} |")
    for name in ("tuned", "base", "model"):
        if result.get("likelihood", {}).get(name):
            lk = result["likelihood"][name]
            lines.append(
                f"| held-out loss ({name}) | {lk['loss']:.3f} "
                f"(perplexity {lk['perplexity']:.1f}, {lk['tokens']} tokens) |"
            )
    if "by_kind" in s.get("length", {}):
        lines += [
            "",
            f"## Words by prompt kind, against training replies to the {SIMILAR_PROMPTS} most similar training prompts",
            "",
            "| kind | replies | median words | training replies' median | ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind, k in s["length"]["by_kind"].items():
            lines.append(
                f"| {kind} | {k['replies']} | {k['median_words']:g} | {fmt(k['similar_training_median_words'])} "
                f"| {fmt(k['ratio'])} |"
            )
    lines += ["", "![words per reply by prompt kind](lengths.png)", "", "## One reply per prompt (sample 0)", ""]
    for row in result["rows"]:
        if row["sample"] == 0:
            flag = "" if row["complete"] else f" _(unfinished: {row['finish_reason']})_"
            lines.append(f"- **{row['id']}** ({row['words']} words){flag}: {row['text'][:600].replace(chr(10), ' ')}")
    return "\n".join(lines) + "\n"


def _lengths_chart(png: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    kinds = sorted({r["kind"] for r in rows})
    data = [[r["words"] for r in rows if r["kind"] == k] for k in kinds] + [result["reference_words"]]
    figure, axis = plt.subplots(figsize=(9, 4))
    axis.boxplot(data)
    axis.set_xticks(range(1, len(data) + 1), [*kinds, "training\nreplies"])
    for y in (SHORT_WORDS, LONG_WORDS):
        axis.axhline(y, color="grey", linestyle="--", linewidth=0.8)
    axis.set_ylabel("words per reply")
    axis.set_title(f"Reply length by prompt kind: {result['model']['label']}")
    figure.tight_layout()
    save_png(figure, png)


def _classifier(training_replies: list[str], reference, assistant_replies, log):
    """(in-character classifier, its held-out check), or (None, None) without assistant replies."""
    if not assistant_replies:
        read_jsonl(reference)  # the reference file is still checked
        return None, None
    from .data_files import located
    from .in_character import train_and_check

    classifier, check = train_and_check(training_replies, assistant_texts(reference), located(assistant_replies))
    log(f"in-character classifier: balanced accuracy {check['balanced']:.3f} on held-out replies")
    return classifier, check


# What generation wrote in each row; everything else in a row is a score, recomputed by rescore.
GENERATED_KEYS = (
    "id",
    "kind",
    "expect",
    "fact",
    "sample",
    "prompt_text",
    "text",
    "tokens",
    "max_new_tokens",
    "finish_reason",
    "truncated",
)


def saved_result(output) -> dict:
    path = Path(output) / "results.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(str(path), f"cannot read an earlier evaluation: {error}") from error


def rescore(output, reference, train_data, card, assistant_replies: str | None = None, log=print) -> dict:
    """Score the replies of an earlier evaluation in `output` again with today's metrics and rewrite its
    report. No model is loaded and nothing is generated: replies cost minutes each, scores a second.
    The held-out loss is kept as it was measured."""
    import sys

    result = saved_result(output)
    try:
        rows = [{key: row[key] for key in GENERATED_KEYS} for row in result["rows"]]
    except (KeyError, TypeError) as error:
        raise DataError(str(Path(output) / "results.json"), f"a row lacks a generated field: {error}") from error
    training_pairs = reply_pairs(train_data)
    classifier, check = _classifier([reply for _, reply in training_pairs], reference, assistant_replies, log)
    summary = score(rows, card, training_pairs, classifier)
    summary["classifier"] = check
    result["config"].update(train_data=str(train_data), assistant_replies=assistant_replies, facts=len(card.facts))
    result.update(
        summary=summary,
        rows=rows,
        rescored="mlx_bluey " + " ".join(sys.argv[1:]),
        reference_words=[len(metrics.words(reply)) for _, reply in training_pairs],
    )
    write_report(Path(output), result)
    _log_headline(summary, output, log)
    return result


def run(args: EvaluationArgs, log=print) -> dict:
    """The whole evaluation: load, generate, score, measure likelihood, write the report."""
    import sys

    from .data_files import located
    from .generation import load_for_generation

    prompts = all_prompts(located(args.prompts_file), args.card)[: args.limit]
    examples = few_shot_examples(args.train_data, args.few_shot)
    training_pairs = reply_pairs(args.train_data)
    training_replies = [reply for _, reply in training_pairs]
    # trained and checked before the long part, so a bad file fails early
    classifier, classifier_check = _classifier(training_replies, args.reference, args.assistant_replies, log)
    network, tokenizer, model_dir = load_for_generation(args.model, args.adapter, log=log)
    rows, journal = _generate_rows(args, prompts, examples, network, tokenizer, model_dir, log)
    summary = score(rows, args.card, training_pairs, classifier)
    summary["classifier"] = classifier_check
    likelihood = {
        "tuned" if args.adapter else "model": held_out_loss(network, tokenizer, args.reference, system=args.system)
    }
    if args.adapter and args.base_likelihood:
        base, base_tokenizer, _ = load_for_generation(str(model_dir), None, log=log)
        likelihood["base"] = held_out_loss(base, base_tokenizer, args.reference, system=args.system)
    label = f"{model_dir.name} + {Path(args.adapter).name}" if args.adapter else model_dir.name
    if examples:
        label += f" ({args.few_shot}-shot)"
    if args.system:
        label += " (system prompt)"
    result = {
        "command": shlex.join(["mlx_bluey", *sys.argv[1:]]),
        "model": {"label": label, "model_dir": str(model_dir), "adapter": str(args.adapter) if args.adapter else None},
        "config": {
            "prompts_file": str(args.prompts_file),
            "prompts": len(prompts),
            "samples": args.samples,
            "seed": args.seed,
            "generation": asdict(args.settings),
            "reference": str(args.reference),
            "train_data": str(args.train_data),
            "few_shot": args.few_shot,
            "system": args.system,
            "long_reply_tokens": args.long_reply_tokens,
            "facts": len(args.card.facts),
            "assistant_replies": str(args.assistant_replies) if args.assistant_replies else None,
        },
        "summary": summary,
        "likelihood": likelihood,
        "reference_words": [len(metrics.words(t)) for t in training_replies],
        "rows": rows,
    }
    write_report(Path(args.output), result)
    journal.finish()
    _log_headline(summary, args.output, log)
    return result


def _generate_rows(args: EvaluationArgs, prompts, examples, network, tokenizer, model_dir, log) -> tuple[list, Journal]:
    """Every prompt's samples, journalled: an interrupted evaluation of the same model, prompts and settings
    continues from its replies so far. The journal is finished once the report is written."""
    import sys

    from tqdm import tqdm

    from .special_tokens import stop_token_ids

    header = {
        "model": str(model_dir),
        "adapter": str(args.adapter) if args.adapter else None,
        "prompts": [p.id for p in prompts],
        "samples": args.samples,
        "seed": args.seed,
        "generation": asdict(args.settings),
        "few_shot": args.few_shot,
        "long_reply_tokens": args.long_reply_tokens,
        **({"system": args.system} if args.system else {}),  # journals from before --system stay resumable
    }
    journal = Journal(Path(args.output).with_name(Path(args.output).name + ".partial.jsonl"), header)
    if journal.records:
        log(f"resuming: {len(journal.records)} replies from {journal.path}")
    try:
        with tqdm(total=len(prompts) * args.samples, unit="reply", file=sys.stderr) as bar:
            rows = generate_samples(
                network,
                tokenizer,
                prompts,
                args.samples,
                args.seed,
                args.settings,
                stop_token_ids(model_dir, tokenizer),
                bar.update,
                args.long_reply_tokens,
                examples,
                journal,
                args.system,
            )
    finally:
        journal.close()
    return rows, journal
