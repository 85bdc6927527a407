"""One definition of a word, a sentence end and a marker (mlx_bluey/text.py), and the page's text.js agrees."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mlx_bluey import text
from mlx_bluey.generation import trim_to_sentence

WEB = Path(__file__).parent.parent / "mlx_bluey" / "web"

CASES = [
    "Hooray! Let's play.",
    "I reckon Bingo is four. She said",
    'Mum said "no way!" and laughed',
    'Mum said "no way!"',
    "Dad is a horsey (a big one.) Then we",
    "Wait for it… Bingo!",
    "Is it a game?Maybe",
    "no sentence end at all here",
    "oneword",
    "Bluey 🐶 is six! Really 🐶",
    "   trailing spaces.   ",
    "Mr. Bean is funny",
]


def test_a_word_is_letters_digits_and_apostrophes():
    assert text.words("G'day, Mum! It's 6 o'clock — café time...") == [
        "g'day",
        "mum",
        "it's",
        "6",
        "o'clock",
        "café",
        "time",
    ]
    assert text.word_count("G'day, Mum! — ...") == 2  # split() would say 4


def test_sentence_ends_and_markers():
    assert text.last_sentence_end('She said "hi!" then') == len('She said "hi!"')
    assert text.last_sentence_end("no end") == 0
    assert text.count_markers("Mummy and Mum, MUM!", ["Mum", "Dad"]) == {"Mum": 2}
    assert text.opening("Okay, so FIRST we...") == "okay so first"


@pytest.mark.skipif(shutil.which("node") is None, reason="node (installed with the page's npm packages)")
def test_the_page_cuts_replies_where_generate_does():
    script = (
        "import { trimToSentence } from " + json.dumps((WEB / "text.js").as_uri()) + ";"
        "let input = ''; process.stdin.on('data', (d) => input += d); process.stdin.on('end', () => {"
        "console.log(JSON.stringify(JSON.parse(input).map(trimToSentence)));});"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=json.dumps(CASES),
        capture_output=True,
        text=True,
        check=True,
    )
    page = json.loads(done.stdout)
    assert page == [trim_to_sentence(case)[0] for case in CASES]
    assert sum(trim_to_sentence(case)[1] for case in CASES) == 8  # 8 of the 12 are cut, 4 kept whole
