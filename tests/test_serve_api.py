"""`mlx_bluey serve --api` through the official `openai` client, on the tiny fused model (greedy: REPLY)."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

import openai
import pytest
from conftest import REPLY

from mlx_bluey.chat_format import encode_text, prompt_ids
from mlx_bluey.generation_settings import GenerationSettings
from mlx_bluey.serve_api import ApiError, parse_messages, parse_settings, serve_api_in_thread

NAME = "bluey-tiny"
HI = [{"role": "user", "content": "hi 3"}]  # a training prompt: the tiny adapter answers REPLY


@pytest.fixture(scope="module")
def api(tiny_fused):
    from mlx_bluey.generation import load_for_generation

    model, tokenizer, model_dir = load_for_generation(str(tiny_fused), None, log=lambda _: None)
    server, url = serve_api_in_thread(model, tokenizer, model_dir, NAME)
    client = openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0, timeout=120)
    yield client, url, server, tokenizer
    server.shutdown()
    server.generator.stop()


def test_models_lists_the_one_served_model(api):
    client, *_ = api
    assert [m.id for m in client.models.list()] == [NAME]


def test_completion_is_the_learnt_reply_with_its_token_counts(api):
    client, _, _, tokenizer = api
    response = client.chat.completions.create(model=NAME, messages=HI, temperature=0)
    choice = response.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", REPLY, "stop")
    assert response.usage.prompt_tokens == len(prompt_ids(tokenizer, HI))
    assert response.usage.completion_tokens == len(encode_text(tokenizer, REPLY))  # the stop id is not counted
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_a_request_without_a_system_message_gets_the_trained_one(tiny_fused):
    from mlx_bluey.generation import load_for_generation

    model, tokenizer, model_dir = load_for_generation(str(tiny_fused), None, log=lambda _: None)
    server, url = serve_api_in_thread(model, tokenizer, model_dir, NAME, system="Be Bluey.")
    try:
        client = openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0, timeout=120)
        trained = [{"role": "system", "content": "Be Bluey."}, *HI]
        for messages, expected in ((HI, trained), ([{"role": "system", "content": "Own."}, *HI], None)):
            response = client.chat.completions.create(model=NAME, messages=messages, temperature=0, max_tokens=1)
            assert response.usage.prompt_tokens == len(prompt_ids(tokenizer, expected or messages))
    finally:
        server.shutdown()
        server.generator.stop()


def test_stream_sends_whole_words_then_the_finish_and_usage(api):
    client, _, _, tokenizer = api
    chunks = list(
        client.chat.completions.create(
            model=NAME, messages=HI, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == REPLY
    # whole words: one piece per word, each after the first with its space in front (a half word is held back)
    assert len(pieces) == REPLY.count(" ") + 1 and all(p.startswith(" ") for p in pieces[1:])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(encode_text(tokenizer, REPLY))


def test_max_tokens_cuts_back_to_the_last_finished_sentence(api):
    client, *_ = api
    # 10 tokens of the character-level tiny tokenizer: "Hooray! Bi", cut back to "Hooray!"
    response = client.chat.completions.create(model=NAME, messages=HI, temperature=0, max_tokens=10)
    assert (response.choices[0].message.content, response.choices[0].finish_reason) == ("Hooray!", "length")
    assert response.usage.completion_tokens == 10


def test_requests_queue_and_each_gets_its_reply(api):
    client, *_ = api
    replies = []

    def ask():
        replies.append(client.chat.completions.create(model=NAME, messages=HI, temperature=0).choices[0].message)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.content for r in replies] == [REPLY] * 3


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"model": "gpt-4o"}, openai.NotFoundError, "model"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, openai.BadRequestError, "messages[0].role"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, openai.BadRequestError, "messages[0].role"),
        ({"messages": [*HI, {"role": "assistant", "content": "x"}]}, openai.BadRequestError, "messages"),
        ({"max_tokens": 10**9}, openai.BadRequestError, "max_tokens"),
        ({"max_tokens": 0}, openai.BadRequestError, "max_tokens"),
        ({"n": 2}, openai.BadRequestError, "n"),
        ({"temperature": 5}, openai.BadRequestError, "temperature"),
        ({"extra_body": {"mirostat": 2}}, openai.BadRequestError, "mirostat"),
        ({"extra_body": {"stream": "yes"}}, openai.BadRequestError, "stream"),
    ],
)
def test_bad_requests_get_openai_errors(api, kwargs, error, param):
    client, *_ = api
    request = {"model": NAME, "messages": HI, **kwargs}
    with pytest.raises(error) as raised:
        client.chat.completions.create(**request)
    assert raised.value.body["param"] == param and raised.value.body["type"] == "invalid_request_error"


def test_malformed_json_and_unknown_routes(api):
    _, url, *_ = api
    for path, data, status in [("/chat/completions", b"{not json", 400), ("/completions", b"{}", 404)]:
        request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request)
        assert raised.value.code == status
        assert json.loads(raised.value.read())["error"]["type"] == "invalid_request_error"


def test_a_client_that_hangs_up_mid_stream_cancels_its_generation(api):
    client, url, server, _ = api
    before = server.generator.cancelled
    address = urlparse(url)
    body = json.dumps({"model": NAME, "messages": HI, "stream": True, "max_tokens": 2000, "min_tokens": 2000})
    with socket.create_connection((address.hostname, address.port), timeout=60) as connection:
        connection.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        assert connection.recv(4096).startswith(b"HTTP/1.0 200")  # generation has started
    # hung up without reading the other ~2,000 tokens
    deadline = time.monotonic() + 60
    while server.generator.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.generator.cancelled == before + 1
    # and the server goes on serving
    assert client.chat.completions.create(model=NAME, messages=HI, temperature=0).choices[0].message.content == REPLY


def test_parse_messages_folds_text_parts_and_keeps_a_leading_system_turn():
    messages = parse_messages(
        [{"role": "system", "content": "Be Bluey."}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    )
    assert messages == [{"role": "system", "content": "Be Bluey."}, {"role": "user", "content": "hi"}]
    with pytest.raises(ApiError, match="messages must be a non-empty list"):
        parse_messages([])


def test_parse_settings_maps_fields_onto_the_cli_defaults():
    defaults = GenerationSettings()
    settings = parse_settings(
        {"temperature": 0, "max_tokens": 40, "min_tokens": 5, "top_k": 8, "seed": 3, "stop": None}, defaults, 32_768
    )
    assert (settings.temperature, settings.max_new_tokens, settings.min_new_tokens, settings.top_k, settings.seed) == (
        0.0,
        40,
        5,
        8,
        3,
    )
    assert (settings.top_p, settings.repetition_penalty) == (defaults.top_p, defaults.repetition_penalty)
    assert parse_settings({}, defaults, 32_768) == defaults  # nothing asked: the CLI's defaults
    with pytest.raises(ApiError, match="max_tokens must be an integer"):
        parse_settings({"max_tokens": 1.5}, defaults, 32_768)
    with pytest.raises(ApiError, match="stop=.*not supported"):
        parse_settings({"stop": ["\n"]}, defaults, 32_768)


def test_cli_serves_the_api_and_refuses_mixed_options(tiny_fused, tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "mlx_bluey.cli", "serve"]
    for extra, message in [(["--api"], "--api needs --model"), (["--model", "x"], "go with --api")]:
        result = subprocess.run(command + extra, capture_output=True, text=True)
        assert result.returncode != 0 and message in result.stderr
    server = subprocess.Popen(
        [*command, "--api", "--model", str(tiny_fused), "--name", NAME, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        while "OpenAI-compatible API" not in line:
            line = server.stdout.readline()
            assert line, "the server exited before it listened"
        url = line.split(" on ")[1].split()[0]
        with urllib.request.urlopen(url + "/models", timeout=30) as response:
            assert [m["id"] for m in json.loads(response.read())["data"]] == [NAME]
    finally:
        server.terminate()
        server.wait(timeout=30)
