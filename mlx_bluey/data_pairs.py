"""`mlx_bluey data pairs`: a preference file built from chat data and the models at hand, no annotation.

For every conversation of the input, the prompt is every turn before the last reply and **chosen**
is that reply, the dataset's own. **Rejected** replies come from four sources, each at most one
pair per conversation and each counted in the stats file:

- ``template``: the prompt names one of the card's ``pressure_markers`` (an identity, jailbreak or
  off-domain request): an assistant-style reply from the card's ``assistant_templates``, picked
  with the seed. Another persona's card brings its own markers and templates.
- ``fact``: the reply says a card fact's right phrase (a ``swap`` entry of the card, e.g. "Bingo is
  four -> Bingo is six"): the same reply with the wrong phrase in its place, the first swap that fits
  in card order. The pair differs only where the fact is, so the objective's whole margin is the fact.
- ``base``: the untuned base model's sampled reply (it talks like no one in particular).
- ``adapter``: the SFT adapter's own sampled reply, kept only when it fails a check (on-policy
  negatives): assistant talk (metrics.assistant_phrases: the lexicon and the card's markers), not
  finished, contradicting a card fact (one of its rejected phrases), missing the card fact a short
  dataset reply opens with (``answer_fact``: "She's four!" chosen, "Yep! ... Brisbane" or "Six!" sampled;
  judged as the evaluation judges its fact questions, metrics.states_fact), or a length far from the
  dataset's reply (under a third or over twice its words, by more than LENGTH_SLACK_WORDS); with
  ``short_stays_short``, also a reply of SHORT_WORDS or more where the dataset's is shorter (the evaluation's
  rule for a short prompt: text.SHORT_WORDS).

Template and fact pairs need no model and cover every conversation; ``limit`` bounds the model sources
(generation is the slow part). Sampling uses the chat defaults and seed + conversation index, so a run
is repeatable. Results go to a ``.partial`` file as they come, under a header naming the data, seed,
base model, the adapter's weights (sha256) and the sampling settings; an interrupted run of the same
header continues from it (a smaller or larger limit reuses its records), and the output (pairs in
conversation order, then ``<output>.stats.json``) is written atomically at the end.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

from . import metrics
from .atomic import atomic_write_text
from .data import read_jsonl
from .journal import Journal
from .system_message import add_system, trained_system
from .text import SHORT_WORDS, count_markers, marker_pattern, opening, words

SOURCES = ("template", "fact", "base", "adapter")  # the order pairs of one conversation are written in
FACT_ID = re.compile(r"^contradicts card fact (\S+):")  # a fact pair's reason names its fact
LENGTH_SLACK_WORDS = 20  # a reply 3 words long is not "twice as long" as one of 1 word
# A dataset reply answers a card fact when it is this short and names the fact's accepted answer in its
# first ANSWER_WORDS words ("Nope! We live in Brisbane." names it at word 5): part14-16's fact replies
# are 5-18 words; longer replies name the family in passing, which asks nothing of a sampled reply.
ANSWER_MAX_WORDS, ANSWER_WORDS = 25, 6


def last_user_turn(messages: list[dict]) -> str:
    """The last user turn's text (validated chat data always has one)."""
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def length_problem(reply: str, chosen: str, short_stays_short: bool = False) -> str | None:
    got, want = len(words(reply)), len(words(chosen))
    if got > 2 * want + LENGTH_SLACK_WORDS or (short_stays_short and want < SHORT_WORDS <= got):
        return f"too long: {got} words, the dataset's reply {want}"
    if got < want / 3 - LENGTH_SLACK_WORDS:
        return f"too short: {got} words, the dataset's reply {want}"
    return None


def answer_fact(chosen: str, question: str, card):
    """The card fact a short dataset reply answers: of the facts whose accepted answer it names in its
    opening words and the question does not name itself ("How old is Bingo?" -> "Bingo's four!" answers
    the age, not the name), the one named first, when the reply states it as the evaluation wants it
    (metrics.states_fact); None for a longer reply or one that opens with no fact. A reply that names
    the family in passing ("Super fast! I beat Bingo...") counts too: run it on fact conversations."""
    if len(words(chosen)) > ANSWER_MAX_WORDS:
        return None
    first_words = opening(chosen, ANSWER_WORDS)
    named = {}
    for fact in card.facts:
        if count_markers(question, list(fact.accept)):
            continue
        spots = [m.start() for a in fact.accept if (m := marker_pattern(a).search(first_words))]
        if spots:
            named[fact.id] = (min(spots), fact)
    if not named:
        return None
    _, fact = min(named.values(), key=lambda spot: spot[0])
    return fact if metrics.states_fact(chosen, fact.accept, fact.reject, fact.answers, question) else None


def failed_checks(
    reply: str, finish_reason: str, chosen: str, card, question: str = "", short_stays_short: bool = False
) -> list[str]:
    """Why an adapter reply is a fair 'rejected' (empty: it passes every check); `question` is the last
    user turn, which the fact answers are judged against; `short_stays_short`: see length_problem."""
    problems = []
    if phrases := metrics.assistant_phrases(reply, card.break_character_markers):
        problems.append(f"out of character: {', '.join(phrases)}")
    if not metrics.is_complete(reply, finish_reason):
        problems.append("unfinished")
    for fact in card.facts:
        if fact.reject and count_markers(reply, list(fact.reject)):
            problems.append(f"contradicts card fact {fact.id}")
    fact = answer_fact(chosen, question, card)
    if fact and not metrics.states_fact(reply, fact.accept, fact.reject, fact.answers, question):
        problems.append(f"misses card fact {fact.id}")
    if problem := length_problem(reply, chosen, short_stays_short):
        problems.append(problem)
    return problems


def pressure_hits(prompt: list[dict], card) -> list[str]:
    """The card's pressure markers the last user turn names, sorted (empty: not a pressure prompt)."""
    return sorted(count_markers(last_user_turn(prompt), card.pressure_markers))


def template_pair(prompt: list[dict], card, rng: random.Random) -> tuple[str, str] | None:
    """(an assistant-style reply, the reason) when the last user turn names a pressure marker."""
    hits = pressure_hits(prompt, card)
    if not hits or not card.assistant_templates:
        return None
    return rng.choice(card.assistant_templates), f"assistant-style template (prompt names {', '.join(hits)})"


def fact_pair(reply: str, card, skip: frozenset = frozenset()) -> tuple[str, str] | None:
    """(the reply with a card fact made wrong, the reason) for the first swap whose right phrase it says;
    facts whose id is in `skip` are passed over."""
    for fact in card.facts:
        if fact.id in skip:
            continue
        for right, wrong in fact.swaps():
            pattern = re.compile(marker_pattern(right).pattern, re.IGNORECASE)  # whole words, as the evaluation
            if pattern.search(reply):
                swapped = pattern.sub(lambda found, wrong=wrong: _like(found.group(0), wrong), reply)
                return swapped, f"contradicts card fact {fact.id}: {right!r} -> {wrong!r}"
    return None


def _like(found: str, wrong: str) -> str:
    """`wrong` with the capital of `found`'s first letter ("Bandit!" -> "Rusty!", "she's four" -> "she's six")."""
    return wrong[:1].upper() + wrong[1:] if found[:1].isupper() else wrong[:1].lower() + wrong[1:]


def journal_header(
    data,
    seed: int,
    model: str | None,
    adapter: str | None,
    settings,
    max_per_fact: int | None = None,
    short_stays_short: bool = False,
) -> dict:
    """What makes a run's records reusable: the same data, seed, models, sampling settings, fact cap and
    length rule (the last two named only when set, so a run without them reads older journals)."""
    from .checkpoints import ADAPTER_FILE, sha256_files

    weights = sha256_files([Path(adapter) / ADAPTER_FILE]) if adapter else None
    sampling = {k: v for k, v in asdict(settings).items() if k != "seed"}
    header = {"data": str(data), "seed": seed, "model": model, "adapter_sha256": weights, "settings": sampling}
    if max_per_fact is not None:
        header["max_per_fact"] = max_per_fact
    return {**header, "short_stays_short": True} if short_stays_short else header


class _Generator:
    """One model (base, or base + adapter) loaded on first use."""

    def __init__(self, model: str | None, adapter: str | None, settings, log):
        self.model, self.adapter, self.settings, self.log = model, adapter, settings, log
        self.loaded = None

    def reply(self, prompt: list[dict], seed: int):
        from .generation import generate_reply, load_for_generation
        from .special_tokens import stop_token_ids

        if self.loaded is None:
            network, tokenizer, model_dir = load_for_generation(self.model, self.adapter, log=self.log)
            # the adapter is asked in the format it was trained in; the pair file keeps the prompt as the data
            # has it (a preference stage puts the system message back in: system_message.training_system)
            system = trained_system(self.adapter)
            self.loaded = network, tokenizer, stop_token_ids(model_dir, tokenizer), system
        network, tokenizer, stops, system = self.loaded
        return generate_reply(network, tokenizer, add_system(prompt, system), replace(self.settings, seed=seed), stops)


def progress_steps(conversations: int, limit: int | None, use_base: bool, adapter) -> int:
    """build_pairs' progress steps: one per conversation for templates and for fact swaps, one per
    generated-for conversation and model (the first `limit` conversations, for the base and the adapter)."""
    return 2 * conversations + min(limit or conversations, conversations) * (use_base + (adapter is not None))


def build_pairs(
    data: str | Path,
    output: str | Path,
    card,
    model: str | None,
    adapter: str | None,
    use_base: bool = True,
    seed: int = 0,
    limit: int | None = None,
    settings=None,
    progress=None,
    log=print,
    max_per_fact: int | None = None,
    short_stays_short: bool = False,
) -> dict:
    """Write the pair file and its stats; return the stats. `model` is the base (None: the adapter's
    base, else the embedded default); `use_base=False` skips the base source, `adapter=None` the adapter's;
    `limit` bounds the conversations the model sources generate for (templates and facts cover all);
    `max_per_fact` caps the fact-swap pairs of each card fact (in conversation order; None = no cap);
    `short_stays_short` rejects an adapter reply of SHORT_WORDS+ words to a prompt whose dataset reply is shorter.

    About 70 lines: the journal's resume, the walk over sources and conversations and the stats are one
    pass over shared state (done, per_fact); split up, each part would take most of it as arguments."""
    from .generation import GenerationSettings, base_model_of

    if model is None and adapter is not None:
        model = base_model_of(adapter)

    conversations = read_jsonl(data)
    generated = len(conversations[:limit])
    output = Path(output)
    settings = settings or GenerationSettings()
    header = journal_header(data, seed, model, adapter, settings, max_per_fact, short_stays_short)
    journal = Journal(output.with_name(output.name + ".partial"), header)
    done = {(r["source"], r["conversation"]): r["pair"] for r in journal.records}
    per_fact: Counter = Counter()  # fact-swap pairs so far (at the end: in the output), by fact id
    generators = {
        "base": _Generator(model, None, settings, log) if use_base else None,
        "adapter": _Generator(model, adapter, settings, log) if adapter else None,
    }
    try:
        for source in SOURCES:
            if source in generators and generators[source] is None:
                continue
            for index, conversation in enumerate(conversations[: generated if source in generators else None]):
                if (source, index) not in done:
                    capped = _capped(card, per_fact, max_per_fact) if source == "fact" else frozenset()
                    pair = _one(source, index, conversation.messages, card, seed, generators, capped, short_stays_short)
                    journal.append({"source": source, "conversation": index, "pair": pair})
                    done[(source, index)] = pair
                if source == "fact" and done[(source, index)] is not None:
                    per_fact[FACT_ID.search(done[(source, index)]["reason"]).group(1)] += 1
                if progress:
                    progress(1)
    finally:
        journal.close()
    pairs = [
        done[(source, index)]
        for index in range(len(conversations))
        for source in SOURCES
        if done.get((source, index)) is not None
    ]
    stats = {
        "data": str(data),
        "conversations": len(conversations),
        "conversations_generated_for": generated if any(generators.values()) else 0,
        "seed": seed,
        "max_per_fact": max_per_fact,
        "short_stays_short": short_stays_short,
        "base_model": model if use_base or adapter else None,
        "adapter": adapter,
        **pair_counts(pairs, card, per_fact),
    }
    atomic_write_text(output, "".join(json.dumps(p) + "\n" for p in pairs))
    atomic_write_text(output.with_name(output.name + ".stats.json"), json.dumps(stats, indent=2) + "\n")
    journal.finish()
    return stats


def pair_counts(pairs: list[dict], card, per_fact: Counter) -> dict:
    """The stats' counts: pairs, by source, fact swaps by card fact, adapter replies kept by failed check."""
    return {
        "pairs": len(pairs),
        "by_source": {s: sum(p["source"] == s for p in pairs) for s in SOURCES},
        "facts_swapped": {fact.id: per_fact[fact.id] for fact in card.facts if fact.swap},
        "adapter_replies_kept": {
            reason: sum(reason in p["reason"] for p in pairs if p["source"] == "adapter")
            for reason in (
                "out of character",
                "unfinished",
                "contradicts card fact",
                "misses card fact",
                "too long",
                "too short",
            )
        },
    }


def _capped(card, per_fact: Counter, max_per_fact: int | None) -> frozenset:
    """The facts whose swap pairs have reached the cap (none without one)."""
    return frozenset(f.id for f in card.facts if max_per_fact is not None and per_fact[f.id] >= max_per_fact)


def _one(
    source: str,
    index: int,
    messages: list[dict],
    card,
    seed: int,
    generators,
    capped=frozenset(),
    short_stays_short: bool = False,
) -> dict | None:
    prompt, chosen = messages[:-1], messages[-1]["content"]
    pair = lambda rejected, reason: {  # noqa: E731 (one line, three uses)
        "messages": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "reason": reason,
        "source": source,
    }
    if source == "template":
        picked = template_pair(prompt, card, random.Random(f"{seed}:{index}"))
        return pair(*picked) if picked else None
    if source == "fact":
        swapped = fact_pair(chosen, card, skip=capped)
        return pair(*swapped) if swapped else None
    reply = generators[source].reply(prompt, seed + index)
    text = reply.text.strip()
    if not text or text == chosen:
        return None
    if source == "base":
        return pair(text, "untuned base model")
    problems = failed_checks(text, reply.finish_reason, chosen, card, last_user_turn(prompt), short_stays_short)
    return pair(text, "; ".join(problems)) if problems else None
