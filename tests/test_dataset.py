"""The Bluey dataset keeps its promises: size, split, length mix, multi-turn share, a true data card."""

from pathlib import Path

import pytest

from mlx_bluey.character import load_card
from mlx_bluey.data import read_jsonl
from mlx_bluey.data_split import write_split
from mlx_bluey.data_stats import compute_stats, to_markdown
from mlx_bluey.data_validate import validate_files

pytestmark = pytest.mark.real  # counts tokens with the real Gemma 3 tokenizer
DATA = Path(__file__).parent.parent / "data" / "bluey"
SPLITS = [DATA / "train.jsonl", DATA / "valid.jsonl", DATA / "test.jsonl"]
STATS_COMMAND = "mlx_bluey data stats data/bluey/train.jsonl data/bluey/valid.jsonl data/bluey/test.jsonl"


@pytest.fixture(scope="module")
def tokenizer(embedded_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedded_dir))


@pytest.fixture(scope="module")
def stats(tokenizer):
    import os

    here = os.getcwd()
    os.chdir(DATA.parent.parent)  # the card shows paths as the command gave them: relative to the repo
    try:
        relative = [path.relative_to(DATA.parent.parent) for path in SPLITS]
        return compute_stats(relative, tokenizer, load_card(DATA / "character.yaml").voice_markers)
    finally:
        os.chdir(here)


def test_validates_clean_across_all_splits(tokenizer):
    report = validate_files(SPLITS, tokenizer, max_seq_length=1024)  # configs/bluey.yaml's limit
    assert [str(p) for p in report.problems] == []
    assert report.conversations >= 600


# The data card's split commands: parts 1-7 split afresh, then each later part added with --keep, one run per part
# (part8 to part15 so far; sharing out several parts in one run would split them another way).
FIRST_PARTS = 7


def test_split_is_80_10_10_and_reproducible(tmp_path):
    parts = sorted((DATA / "raw").glob("part*.jsonl"), key=lambda p: int(p.stem[4:]))
    first = write_split(parts[:FIRST_PARTS], tmp_path, valid=0.1, test=0.1, seed=0)
    assert first["valid"] == first["test"] == round(0.1 * sum(first.values()))
    counts = first
    for added in range(FIRST_PARTS + 1, len(parts) + 1):
        before, counts = counts, write_split(parts[:added], tmp_path, valid=0.1, test=0.1, seed=0, keep=True)
        new = sum(counts.values()) - sum(before.values())  # each part's own 10% and 10%, rounded (part14: 106 -> 11)
        assert counts["valid"] - before["valid"] == counts["test"] - before["test"] == round(0.1 * new)
    assert sum(counts.values()) >= 600
    for path in SPLITS:  # the committed split is exactly what the tool makes from raw/
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), f"re-run: {path.name} is stale"


def test_length_mix_and_multi_turn_share(stats):
    assert stats.short_share >= 0.15
    # 14.6% on the 1638-conversation split, after 240 short questions were added on purpose (data/bluey/README.md):
    # still one reply in seven over 120 words, so no single length is learned.
    assert stats.long_share >= 0.14
    assert stats.multi_turn / stats.conversations >= 0.20
    assert max(stats.user_turns) <= 4 and stats.with_system >= 5


def test_data_card_table_is_the_tools_output(stats):
    card = (DATA / "README.md").read_text()
    assert f"`{STATS_COMMAND}`" in card
    assert to_markdown(stats) in card, "data card is stale: paste the output of the stats command"


@pytest.mark.parametrize(("part", "size"), [("part14", 106), ("part15", 82)])
def test_fact_parts_carry_the_cards_prompt(part, size):
    """part14's and part15's conversations have the card's default_system_prompt written in as their system message
    (data card, "How part14 joined"): a card whose prompt changes must change them too."""
    rows = read_jsonl(DATA / "raw" / f"{part}.jsonl")
    systems = {row.messages[0]["content"] for row in rows if row.messages[0]["role"] == "system"}
    assert len(rows) == size and all(row.messages[0]["role"] == "system" for row in rows)
    assert systems == {load_card(DATA / "character.yaml").default_system_prompt}
