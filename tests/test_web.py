"""The chat page end to end in real headless Chromium (Debian's, driven by Playwright), and `serve` itself.

A tiny exported model (conftest.tiny_export) is served on localhost; the test loads the page's default variant
(serve.default_variant: the fastest the page benchmark measured whose download fits) on WASM,
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
from mlx_bluey.serve import (
    ISOLATION_HEADERS,
    SPEEDS,
    ServeError,
    default_variant,
    make_server,
    measured_speeds,
    serve_in_thread,
)

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
        variants = catalogue[0]["variants"]
        assert [v["variant"] for v in variants] == ["int8", "int8-vocab", "q8", "q4", "fp16"]  # never fp32
        # int8 needs onnxruntime to fold its DequantizeLinear weights at load; the page passes this on
        assert variants[0]["session_config"] == variants[1]["session_config"] == {"session.disable_quant_qdq": "1"}
        assert all(v["session_config"] == {} for v in variants[2:])
        # what Transformers.js is asked for: onnx/{model_file_name}{dtype's suffix}.onnx
        assert [(v["model_file_name"], v["dtype"]) for v in variants[:3]] == [
            ("model", "int8"),
            ("model_vocab", "int8"),
            ("model", "q8"),
        ]
        speeds = measured_speeds()
        assert [v["wasm_decode_tokens_per_s"] for v in variants] == [speeds.get(v["variant"]) for v in variants]
        assert catalogue[0]["default_variant"] == default_variant(variants, speeds)
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


def test_default_variant_is_the_fastest_measured_that_fits_with_parity():
    variants = [{"variant": "int8", "mb": 271.0}, {"variant": "q8", "mb": 277.6}, {"variant": "fp16", "mb": 537.1}]
    # fp16 is the fastest but over the download limit; of those that fit, int8 is faster than q8
    assert default_variant(variants, {"int8": 8.0, "q8": 1.2, "fp16": 9.0}) == "int8"
    assert default_variant(variants, {"int8": 8.0, "q8": 1.2, "fp16": 9.0}, limit_mb=600) == "fp16"
    assert default_variant(variants, {"q8": 1.2}) == "q8"  # an unmeasured variant is never preferred
    assert default_variant(variants, {}) == "int8"  # nothing measured fits: the smallest download
    assert default_variant(variants, {"fp16": 9.0}) == "int8"
    assert default_variant([], {"int8": 8.0}) is None
    # a faster variant whose top-1 agreement is under PARITY_FLOOR (0.93) is not the default; one without a
    # parity figure (exported without --parity-data) is not held to it
    cut = {"variant": "int8-vocab", "mb": 271.2, "top1_agreement": 0.92}
    assert default_variant([*variants, cut], {"int8": 8.0, "int8-vocab": 12.0}) == "int8"
    assert default_variant([*variants, {**cut, "top1_agreement": 0.94}], {"int8": 8.0, "int8-vocab": 12.0}) == (
        "int8-vocab"
    )
    assert default_variant([*variants, {**cut, "top1_agreement": None}], {"int8-vocab": 12.0}) == "int8-vocab"


def test_measured_speeds_are_the_committed_page_benchmarks():
    """web/speeds.json holds, per variant, the median of the page benchmark it names (bench_browser --record-speed)."""
    speeds = json.loads(SPEEDS.read_text())
    root = Path(__file__).resolve().parent.parent
    assert speeds["wasm"], "no measured variant: the page would fall back to the smallest download"
    for variant, entry in speeds["wasm"].items():
        record = json.loads((root / entry["benchmark"]).read_text())
        assert record["variant"] == variant and record["device"] == "wasm"
        assert entry["decode_tokens_per_s"] == round(record["decode"]["median"], 2)
    assert measured_speeds() == {v: e["decode_tokens_per_s"] for v, e in speeds["wasm"].items()}


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
            page.wait_for_function("document.querySelectorAll('#model option').length === 5")
            page.wait_for_function("document.getElementById('status').textContent.includes('MB to download')")
            chosen = page.input_value("#model")  # the WASM default, with its download size shown before loading
            served = json.loads(urllib.request.urlopen(url + "models.json").read())[0]
            assert chosen == f"{tiny_export.name}|{served['default_variant']}"
            size = next(v["mb"] for v in served["variants"] if v["variant"] == served["default_variant"])
            assert f"{served['default_variant']}: {size} MB to download" in page.inner_text("#status")
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
    # timings from the greedy reply: the sampled second one may stop after one token (no decode rate) or at once
    assert first["lastReply"]["decodeTokensPerSecond"] > 0 and first["lastReply"]["promptSeconds"] > 0
    assert state["readyStatus"].startswith("Ready: ")  # the live "Generating: N tokens, X tok/s" line ends with it
    assert messages[1]["content"] == REPLY and isinstance(messages[3]["content"], str)  # the sampled one may be ""
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


def test_the_page_sends_the_trained_system_message_and_its_box_starts_on(tiny_export, tiny_tokenizer, monkeypatch):
    """character.json's trained_system_prompt (fuse writes it for an adapter trained with one): the page's box
    starts on and the prompt is the training template with that message first; unticked, none is sent. The tiny
    export was trained without one, so the served catalogue is given one on its way to the page."""
    from playwright.sync_api import sync_playwright

    monkeypatch.delenv("LD_PRELOAD", raising=False)  # as in the test above
    trained = "Be Bluey."
    server, url = serve_in_thread([tiny_export])

    def with_trained_message(route):
        catalogue = json.loads(route.fetch().text())
        catalogue[0]["character"]["trained_system_prompt"] = trained
        route.fulfill(json=catalogue)

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            page.route("**/models.json", with_trained_message)
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#model option').length === 5")
            page.select_option("#device", "wasm")
            page.click("#load")
            page.wait_for_function("window.mlxBluey.ready || window.mlxBluey.error", timeout=120_000)
            assert page.evaluate("window.mlxBluey.error") is None
            assert page.is_checked("#use_system")
            prompts = []
            for turn in range(2):
                if turn == 1:
                    page.click("#reset")
                    page.click("#sampling summary")  # the box sits in the closed Sampling section
                    page.uncheck("#use_system")
                page.evaluate("document.getElementById('temperature').value = '0'")
                page.evaluate("document.getElementById('max_new_tokens').value = '4'")
                page.fill("#message", "hi 3")
                page.press("#message", "Enter")
                page.wait_for_function(
                    "window.mlxBluey.messages.length === 2 || window.mlxBluey.error", timeout=120_000
                )
                assert page.evaluate("window.mlxBluey.error") is None
                prompts.append(page.evaluate("window.mlxBluey.lastPrompt"))
            browser.close()
    finally:
        server.shutdown()
    user = [{"role": "user", "content": "hi 3"}]
    assert prompts[0] == render(
        tiny_tokenizer, [{"role": "system", "content": trained}, *user], add_generation_prompt=True
    )
    assert prompts[1] == render(tiny_tokenizer, user, add_generation_prompt=True)
