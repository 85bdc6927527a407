"""The chat page end to end in real headless Chromium (Debian's, driven by Playwright), and `serve` itself.

A tiny exported model (conftest.tiny_export) is served on localhost; the test loads the q8 variant on WASM,
types a message, waits for the streamed reply and saves a screenshot (build/e2e/chat.png). Every request
the page makes is recorded: none may leave the server.
"""

import json
import urllib.request
from pathlib import Path

import pytest
from conftest import REPLY

from mlx_bluey.chat_format import render
from mlx_bluey.headless import CHROMIUM_FLAGS, chromium_path
from mlx_bluey.serve import ISOLATION_HEADERS, ServeError, make_server, serve_in_thread

CHROMIUM = chromium_path()
FLAGS = CHROMIUM_FLAGS
SCREENSHOT = Path(__file__).resolve().parent.parent / "build" / "e2e" / "chat.png"


def test_serve_headers_routes_and_catalogue(tiny_export):
    server, url = serve_in_thread([tiny_export])
    try:
        with urllib.request.urlopen(url) as response:
            assert b'<script type="module" src="app.js">' in response.read()
            for key, value in ISOLATION_HEADERS.items():
                assert response.headers[key] == value  # threads in WASM need a cross-origin-isolated page
        with urllib.request.urlopen(url + "models.json") as response:
            catalogue = json.loads(response.read())
        assert catalogue[0]["name"] == tiny_export.name and catalogue[0]["character"]["name"] == "Bluey"
        assert [v["variant"] for v in catalogue[0]["variants"]] == ["q8", "q4", "fp16"]  # fp32 is never offered
        with urllib.request.urlopen(f"{url}models/{tiny_export.name}/tokenizer_config.json") as response:
            assert "chat_template" in json.loads(response.read())
        with urllib.request.urlopen(url + "vendor/transformers.min.js") as response:
            assert response.headers["Content-Type"] == "text/javascript"
        for forbidden in ("models/../../etc/passwd", f"models/{tiny_export.name}/../../x", "serve.py", "package.json"):
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(url + forbidden)
            assert error.value.code == 404
    finally:
        server.shutdown()


def test_serve_refuses_a_directory_that_is_not_an_export(tmp_path):
    with pytest.raises(ServeError, match="no export.json"):
        make_server([tmp_path])


def test_chat_page_streams_a_reply_in_chromium(tiny_export, tiny_tokenizer, monkeypatch):
    from playwright.sync_api import sync_playwright

    # OpenBLAS is preloaded into this process for MLX; in Playwright's node and in Chromium it breaks thread
    # creation ("pthread_create: Invalid argument", then "GPU process isn't usable").
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: run `make browser` (Debian's chromium package)"
    server, url = serve_in_thread([tiny_export])
    requests, errors = [], []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#model option').length === 3")
            assert page.input_value("#model") == f"{tiny_export.name}|q8"  # the WASM default
            page.select_option("#device", "wasm")
            page.click("#load")
            page.wait_for_function("window.mlxBluey.ready || window.mlxBluey.error", timeout=120_000)
            assert page.evaluate("window.mlxBluey.error") is None
            assert page.inner_text("#title") == "Chat with Bluey"
            assert page.evaluate("self.crossOriginIsolated") is True

            states = []
            for turn, message in enumerate(["hi 3", "Can I play too?"]):
                # the first reply is greedy, to a training prompt: the tiny adapter's learnt REPLY, the same on every
                # run (the page samples with Math.random); the second uses the page's defaults
                page.evaluate(f"document.getElementById('temperature').value = '{0 if turn == 0 else 0.7}'")
                page.fill("#message", message)
                page.press("#message", "Enter")
                page.wait_for_function(
                    f"window.mlxBluey.messages.length === {2 * turn + 2} || window.mlxBluey.error", timeout=120_000
                )
                assert page.evaluate("window.mlxBluey.error") is None
                states.append(page.evaluate("window.mlxBluey"))
            state = states[-1]
            page.screenshot(
                path=str(SCREENSHOT.parent.mkdir(parents=True, exist_ok=True) or SCREENSHOT), full_page=True
            )
            browser.close()
    finally:
        server.shutdown()

    assert errors == []
    # the conversation is kept across turns, and the prompt is the training chat template, byte for byte
    messages = state["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert state["lastPrompt"] == render(tiny_tokenizer, messages[:3], add_generation_prompt=True)
    # the tiny adapter learnt one reply with spaces in it, so the greedy streamer sent it in several pieces
    first = states[0]
    assert first["generationOptions"]["do_sample"] is False
    assert first["lastReply"]["text"] == REPLY and first["chunks"] > 1
    assert state["lastReply"]["decodeTokensPerSecond"] > 0 and state["lastReply"]["promptSeconds"] > 0
    assert messages[1]["content"] and messages[3]["content"]
    options = state["generationOptions"]  # the page's defaults, as the second turn used them
    assert options["eos_token_id"] == [1, 5]  # every stop id of generation_config.json
    assert state["suppressTokens"] == [0, 2, 3, 4, 102]  # generation_config: <pad> <bos> <unk> <start_of_turn> <mask>
    # the page's defaults are the CLI's: GenerationSettings, written into generation_config.json by fuse, read
    # from there by the page (index.html holds no value of its own)
    from mlx_bluey.generation_settings import GENERATION_CONFIG_KEYS, generation_config_defaults

    defaults = generation_config_defaults()
    assert state["defaults"] == {key: defaults[key] for key in GENERATION_CONFIG_KEYS}
    assert {key: options[key] for key in GENERATION_CONFIG_KEYS} == state["defaults"]
    assert options["do_sample"] is True
    assert SCREENSHOT.stat().st_size > 10_000
    # nothing left localhost (blob: URLs are the page's own, made from files it fetched here)
    assert requests and all(r.startswith(url) or r.startswith("blob:" + url) for r in requests), requests
