"""Reading chat JSONL: every kind of bad input names file, line and field; batches lose nothing."""

import json
import os

import numpy as np
import pytest
from conftest import chat, run_cli, write_jsonl

from mlx_bluey.data import (
    Conversation,
    DataError,
    EncodedDataset,
    budget_parts,
    epoch_batches,
    length_buckets,
    make_batch,
    read_jsonl,
)
from mlx_bluey.data_split import split_conversations
from mlx_bluey.near_duplicates import jaccard, near_duplicate_groups, shingles, text_shingles

GOOD = chat("hi", "G'day!")

BAD_ROWS = [
    ('{"messages": [', r"f\.jsonl:1: malformed JSON"),
    ({"msgs": []}, r"f\.jsonl:1: missing field 'messages'"),
    ({"messages": []}, r"f\.jsonl:1:messages: must be a non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, r"f\.jsonl:1:messages\[0\]\.role: must be one of"),
    (
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
        r"f\.jsonl:1:messages\[1\]\.content: is empty",
    ),
    (
        {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "hi"}]},
        r"f\.jsonl:1:messages\[1\]\.role: expected 'assistant'",
    ),
    (
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]},
        r"f\.jsonl:1:messages\[1\]\.content: must be a string",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
                {"role": "system", "content": "late"},
            ]
        },
        r"f\.jsonl:1:messages\[2\]\.role: expected 'user'",
    ),
    ({"messages": [{"role": "user", "content": "hi"}]}, r"f\.jsonl:1:messages: must end with an assistant message"),
]


@pytest.mark.parametrize("row,pattern", BAD_ROWS)
def test_bad_row_names_file_line_and_field(tmp_path, row, pattern):
    path = write_jsonl(tmp_path / "f.jsonl", [row, GOOD])
    with pytest.raises(DataError, match=pattern):
        read_jsonl(path)


def test_error_on_a_later_line_names_that_line(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [GOOD, GOOD, '{"messages": 5}'])
    with pytest.raises(DataError, match=r"f\.jsonl:3:messages: must be a non-empty list"):
        read_jsonl(path)


def test_non_utf8_is_reported_with_its_line(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"messages": "\xff"}\n')
    with pytest.raises(DataError, match=r"f\.jsonl:2: not valid UTF-8"):
        read_jsonl(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_blank_lines_are_allowed_and_sources_kept(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [GOOD, "", GOOD])
    rows = read_jsonl(path)
    assert [r.source.rsplit(":", 1)[1] for r in rows] == ["1", "3"]


def test_train_cli_rejects_bad_data_and_keeps_the_old_adapter(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", [GOOD, {"messages": [{"role": "user", "content": ""}]}])
    output = tmp_path / "out"
    output.mkdir()
    (output / "adapters.safetensors").write_bytes(b"previous good adapter")
    result = run_cli(
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--output",
        str(output),
        "--resume",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode != 0
    assert "train.jsonl:2:messages[0].content: is empty" in result.stderr
    assert (output / "adapters.safetensors").read_bytes() == b"previous good adapter"
    assert sorted(p.name for p in output.iterdir()) == ["adapters.safetensors"]


def test_unknown_model_is_a_clear_error(tmp_path):
    data = write_jsonl(tmp_path / "data" / "train.jsonl", [GOOD]).parent
    result = run_cli("train", "--model", "no-such-model", "--data", str(data), "--output", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "unknown model 'no-such-model'" in result.stderr
    assert not (tmp_path / "out").exists()


def _dataset(lengths):
    ids = [np.arange(1, n + 1, dtype=np.int32) for n in lengths]
    labels = [np.array([False] * (n // 2) + [True] * (n - n // 2)) for n in lengths]
    return EncodedDataset(ids, labels, [])


def test_buckets_keep_every_example_once():
    lengths = [9, 3, 7, 3, 12, 5, 4]
    buckets = length_buckets(lengths, batch_size=3)
    assert buckets == [[1, 3, 6], [5, 2, 0], [4]]  # sorted by length; the remainder is kept


def test_budget_parts_keep_each_run_within_the_padded_tokens():
    dataset = _dataset([100, 120, 120, 130, 200, 260, 600])
    # 3 x 120 = 360 fits 512; the fourth makes 4 x 130 = 520
    assert budget_parts(dataset, [0, 1, 2, 3], 512) == [[0, 1, 2], [3]]
    assert budget_parts(dataset, [0, 1, 2, 3], 520) == [[0, 1, 2, 3]]
    # 2 x 260 = 520; a conversation over the budget runs alone
    assert budget_parts(dataset, [4, 5, 6], 512) == [[4], [5], [6]]
    assert budget_parts(dataset, [4, 5, 6], 0) == [[4, 5, 6]]  # 0: no limit
    # a batch not bucketed is sorted by length first: 100, 120, 130 share a run (3 x 130 = 390), 600 is alone
    assert budget_parts(dataset, [6, 3, 0, 1], 512) == [[0, 1, 3], [6]]


def test_unbucketed_batches_are_the_batch_1_order_cut():
    dataset = _dataset(list(range(3, 13)))
    singles = [i for (i,) in epoch_batches(dataset, 1, seed=3, epoch=2)]
    fours = epoch_batches(dataset, 4, seed=3, epoch=2, buckets=False)
    assert fours == [singles[0:4], singles[4:8], singles[8:10]]
    assert fours != epoch_batches(dataset, 4, seed=3, epoch=2)  # buckets: other groups


def test_batch_pads_only_to_its_longest_member():
    dataset = _dataset([4, 6])
    batch = make_batch(dataset, [0, 1])
    assert batch.inputs.tolist() == [[1, 2, 3, 0, 0], [1, 2, 3, 4, 5]]
    assert batch.targets.tolist() == [[2, 3, 4, 0, 0], [2, 3, 4, 5, 6]]
    # labels of [4] are F F T T -> targets 1..3 are labels[1:] = F T T; of [6]: F F F T T T -> F F T T T
    assert batch.target_positions.tolist() == [1, 2, 7, 8, 9]
    assert (batch.n_tokens, batch.inputs.size) == (8, 10)


def test_epoch_order_is_seeded():
    dataset = _dataset(list(range(3, 40)))
    a = epoch_batches(dataset, 4, seed=1, epoch=0)
    assert a == epoch_batches(dataset, 4, seed=1, epoch=0)
    assert a != epoch_batches(dataset, 4, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(len(dataset)))


def test_split_keeps_near_duplicates_together(tmp_path):
    rows = [
        chat(f"question number {i} about topic {i * 7}", f"answer {i} is a different reply with words {i * 3} {i * 5}")
        for i in range(40)
    ]
    rows.append(chat("question number 3 about topic 21", "answer 3 is a different reply with words 9 15 !"))
    rows.append(chat("question number 8 about topic 56!", "answer 8 is a different reply with words 24 40"))
    conversations = read_jsonl(write_jsonl(tmp_path / "all.jsonl", rows))
    groups = [g for g in near_duplicate_groups(conversations) if len(g) > 1]
    assert groups == [[3, 40], [8, 41]]
    splits = split_conversations(conversations, valid=0.1, test=0.1, seed=0)
    assert sorted(sum(splits.values(), [])) == list(range(42))
    where = {i: name for name, members in splits.items() for i in members}
    assert where[3] == where[40] and where[8] == where[41]
    assert (len(splits["valid"]), len(splits["test"])) == (4, 4)
    assert splits == split_conversations(conversations, valid=0.1, test=0.1, seed=0)


def test_a_shared_system_message_does_not_make_near_duplicates():
    """Two fact questions under the same 30-word system message: with it, each has 38 3-grams, 28 of them the
    message's own, so Jaccard 28 / (38 + 38 - 28) = 0.58, a near-duplicate; without it their 8 and 8 share none."""
    system = {"role": "system", "content": " ".join(f"word{i}" for i in range(30))}
    a = Conversation([system, *chat("how old is your sister", "she is four years old")["messages"]], "t:1")
    b = Conversation([system, *chat("which city do you live", "we live in brisbane town")["messages"]], "t:2")
    assert len(shingles(a)) == len(shingles(b)) == 8 and jaccard(shingles(a), shingles(b)) == 0.0
    assert near_duplicate_groups([a, b]) == [[0], [1]]
    with_system = [text_shingles(" ".join(m["content"] for m in c.messages)) for c in (a, b)]
    assert jaccard(*with_system) == 28 / 48


def test_split_keep_leaves_the_earlier_split_and_shares_out_the_new(tmp_path):
    """data split --keep: the 42 earlier conversations stay where they were; of 20 new ones, a near-duplicate
    of a test conversation joins it in test, and the other 19 are shared out 10/10/80 (round(1.9) = 2 each)."""
    first = [
        chat(f"question number {i} about topic {i * 7}", f"answer {i} is a different reply with words {i * 3} {i * 5}")
        for i in range(42)
    ]
    raw = write_jsonl(tmp_path / "raw" / "part1.jsonl", first)
    out = tmp_path / "split"
    run = run_cli("data", "split", raw, "--output", out)
    assert run.returncode == 0 and run.stdout.strip() == "train: 34, valid: 4, test: 4", run.stderr
    before = {name: (out / f"{name}.jsonl").read_text() for name in ("train", "valid", "test")}
    tested = read_jsonl(out / "test.jsonl")[0].messages
    new = [
        chat(f"brand new question {i} on subject {i * 11}", f"a fresh reply number {i} with {i * 13}")
        for i in range(19)
    ]
    new.append({"messages": [*tested[:-1], {"role": "assistant", "content": tested[-1]["content"] + " !"}]})
    added = write_jsonl(tmp_path / "raw" / "part2.jsonl", new)
    run = run_cli("data", "split", raw, added, "--output", out, "--keep")
    assert run.returncode == 0 and run.stdout.strip() == "train: 49, valid: 6, test: 7", run.stderr
    for name, text in before.items():  # the earlier lines first, unchanged, then the new ones
        assert (out / f"{name}.jsonl").read_text().startswith(text)
    assert read_jsonl(out / "test.jsonl")[-1].messages == new[-1]["messages"]
    # without --keep the same files are split afresh: the held-out sets change
    fresh = split_conversations(read_jsonl(raw) + read_jsonl(added), valid=0.1, test=0.1, seed=0)
    assert (len(fresh["valid"]), len(fresh["test"])) == (6, 6)


def test_split_reads_its_inputs_in_natural_order_whatever_order_they_come_in(tmp_path):
    """The shell's `raw/part*.jsonl` gives part1, part10, part2: the split is the one of part1, part2, part10."""
    from mlx_bluey.data_split import write_split

    parts = [
        write_jsonl(
            tmp_path / "raw" / f"part{n}.jsonl",
            [chat(f"part {n} hi {i} {n * i}", f"Reply {n} {i}!") for i in range(10)],
        )
        for n in (1, 2, 10)
    ]
    counts = write_split(parts, tmp_path / "natural", seed=0)
    assert write_split([parts[0], parts[2], parts[1]], tmp_path / "shell", seed=0) == counts
    for name in ("train", "valid", "test"):
        assert (tmp_path / "shell" / f"{name}.jsonl").read_bytes() == (
            tmp_path / "natural" / f"{name}.jsonl"
        ).read_bytes()
    train = (tmp_path / "natural" / "train.jsonl").read_text()
    assert train.index("part 2 hi") < train.index("part 10 hi")
