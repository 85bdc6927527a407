"""The top-up data sets of this report (A, B, C, D), rebuilt from the repository:

    python reports/fact-probe-topup/make_data.py OUT    # writes OUT/topupA ... OUT/topupD

The base split is the 1638-conversation one (train.jsonl and valid.jsonl at commit fed585f, what
adapters/bluey-270m-sft-pressure-quarter trained on); part14's first 100 conversations are the fact questions
(the 6 long ones came after this screen). A: the part8 and part12 conversations of that split with as many others
(seed 0); B: part14's 100 without a system message and 100 other training conversations (seed 1); C: B with part14's
own system message (the card's default_system_prompt) kept. Valid: A's for all three. D (below) reads data/bluey's
split as committed with part14 (1394 / 175 / 175); a later change to the split changes it.
"""

import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def at_commit(path):
    return lines(
        subprocess.run(["git", "show", f"fed585f:{path}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    )


def write(directory, train, valid):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_text("".join(json.dumps(d) + "\n" for d in train))
    (directory / "valid.jsonl").write_text("".join(json.dumps(d) + "\n" for d in valid))
    (directory / "character.yaml").write_text((ROOT / "data/bluey/character.yaml").read_text())


out = Path(sys.argv[1])
fact = {
    json.dumps(d["messages"], sort_keys=True)
    for p in ("part8", "part12")
    for d in lines((ROOT / f"data/bluey/raw/{p}.jsonl").read_text())
}
is_fact = lambda d: json.dumps(d["messages"], sort_keys=True) in fact  # noqa: E731
train, valid = at_commit("data/bluey/train.jsonl"), at_commit("data/bluey/valid.jsonl")
rng = random.Random(0)
a_train = [d for d in train if is_fact(d)] + rng.sample([d for d in train if not is_fact(d)], 184)
rng.shuffle(a_train)
a_valid = [d for d in valid if is_fact(d)] + rng.sample([d for d in valid if not is_fact(d)], 23)
write(out / "topupA", a_train, a_valid)

part14 = lines((ROOT / "data/bluey/raw/part14.jsonl").read_text())[:100]
bare = [{"messages": d["messages"][1:]} for d in part14]
for name, facts in (("topupB", bare), ("topupC", part14)):
    rng = random.Random(1)
    b_train = facts + rng.sample([d for d in train if not is_fact(d)], 100)
    rng.shuffle(b_train)
    write(out / name, b_train, a_valid)

# D: the same top-up from adapters/bluey-270m-sft-part14, on the 1744-conversation split (part14 shared out):
# part14's 84 training conversations (with their system message) and 100 others, none from part8 or part12.
raw14 = {line.strip() for line in (ROOT / "data/bluey/raw/part14.jsonl").read_text().splitlines()}
split = {name: (ROOT / f"data/bluey/{name}.jsonl").read_text().splitlines() for name in ("train", "valid")}
others = [line for line in split["train"] if line not in raw14 and not is_fact(json.loads(line))]
rng = random.Random(1)
d_train = [line for line in split["train"] if line in raw14] + rng.sample(others, 100)
rng.shuffle(d_train)
d_valid = [line for line in split["valid"] if line in raw14]
d_valid += random.Random(0).sample([line for line in split["valid"] if line not in raw14], len(d_valid))
write(out / "topupD", [json.loads(line) for line in d_train], [json.loads(line) for line in d_valid])
