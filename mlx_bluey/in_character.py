"""Does a reply read like the character or like a generic AI assistant? A small classifier says how likely.

A phrase list misses what it does not list ("I'm the helper at the big box office", an answer in
bullet points); this classifier learns the difference from examples instead:
- in character: the assistant replies of the character's train.jsonl;
- out of character: replies a generic AI assistant gives to the same user turns
  (data/eval/assistant_replies.jsonl: friendly, AI-aware, refusing, formal, playing along, code, plain).
Features are hashed word 1-2-grams and character 2-4-grams within word boundaries (punctuation,
emoji and markdown included), a logistic regression on top (scikit-learn). It trains in about a
second on ~1,000 replies, so `mlx_bluey evaluate` trains it on every run instead of shipping a file,
and checks it on held-out replies first: the character's test.jsonl against the assistant replies
to test.jsonl's user turns. That accuracy is reported beside every figure the classifier gives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import DataError, read_jsonl

# 2^18 hashed features: ~1,000 short replies use a few tens of thousands, so collisions are rare.
N_FEATURES = 2**18
# Inverse L2 strength of the logistic regression: scikit-learn's default. With hashed n-grams of
# only ~1,000 replies a weaker penalty overfits the authors' habits, a stronger one underfits.
REGULARISATION_C = 1.0
THRESHOLD = 0.5  # a reply is in character when the probability is at least this


@dataclass
class Classifier:
    vectorizers: list
    model: object

    def probability(self, texts: list[str]) -> np.ndarray:
        """P(in character) for each text."""
        from scipy.sparse import hstack

        features = hstack([v.transform(texts) for v in self.vectorizers]).tocsr()
        return self.model.predict_proba(features)[:, 1]


def fit(in_character: list[str], assistant: list[str], seed: int = 0) -> Classifier:
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizers = [
        HashingVectorizer(
            n_features=N_FEATURES,
            ngram_range=(1, 2),
            alternate_sign=False,
            norm="l2",
            token_pattern=r"(?u)\b\w[\w']*\b|[^\w\s]",
        ),
        HashingVectorizer(
            n_features=N_FEATURES,
            analyzer="char_wb",
            ngram_range=(2, 4),
            alternate_sign=False,
            norm="l2",
            lowercase=False,
        ),
    ]
    texts = [*in_character, *assistant]
    labels = np.array([1] * len(in_character) + [0] * len(assistant))
    features = hstack([v.transform(texts) for v in vectorizers]).tocsr()
    # class_weight balanced: the two sides differ in size (~750 replies vs 300)
    model = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=2000, random_state=seed)
    model.fit(features, labels)
    return Classifier(vectorizers, model)


def accuracy(classifier: Classifier, in_character: list[str], assistant: list[str]) -> dict:
    """Accuracy on each side and balanced (their mean), with counts."""
    p_in = classifier.probability(in_character) if in_character else np.array([])
    p_out = classifier.probability(assistant) if assistant else np.array([])
    right_in, right_out = float(np.mean(p_in >= THRESHOLD)), float(np.mean(p_out < THRESHOLD))
    return {
        "in_character_right": right_in,
        "assistant_right": right_out,
        "balanced": (right_in + right_out) / 2,
        "in_character_replies": len(in_character),
        "assistant_replies": len(assistant),
    }


def assistant_replies(path: str | Path) -> dict[str, list[str]]:
    """The generic assistant replies of `path`, by split (train/test); errors name file and line."""
    read_jsonl(path)  # every line and its messages checked as training data is, errors with file and line
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    split: dict[str, list[str]] = {"train": [], "test": []}
    for number, row in enumerate(rows, 1):
        if row.get("split") not in split:
            raise DataError(f"{path}:{number}:split", f"must be train or test, not {row.get('split')!r}")
        split[row["split"]] += [m["content"] for m in row["messages"] if m["role"] == "assistant"]
    return split


def train_and_check(
    train_replies: list[str], test_replies: list[str], assistant_file: str | Path
) -> tuple[Classifier, dict]:
    """The classifier fitted on the training sides, and its accuracy on the held-out sides."""
    negatives = assistant_replies(assistant_file)
    classifier = fit(train_replies, negatives["train"])
    return classifier, accuracy(classifier, test_replies, negatives["test"])
