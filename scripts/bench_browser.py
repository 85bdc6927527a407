"""Decode speed of an export in the chat page itself: headless Chromium, WASM, as a user runs it.

    .venv/bin/python scripts/bench_browser.py exports/bluey-270m --variant q8 --new-tokens 48 --rounds 3

Serves the export with `mlx_bluey serve`'s server, loads the variant in Debian's chromium (Playwright,
the flags of tests/test_web.py), then sends the same message --rounds times with "min new tokens" =
"max new tokens" = --new-tokens, so every reply has exactly that many tokens. The page's worker times
each token as Transformers.js streams it: decode tok/s excludes the prompt (reported apart). Results:
benchmarks/browser-NAME-VARIANT.{json,md}.

--sampling-cost: each round makes two replies back to back in the same page, one with the page's sampling
defaults (temperature, top-k, top-p and the repetition penalty run in JavaScript over the whole vocabulary
every token) and one greedy without the penalty; the per-round ratio of their decode speeds is what the
sampling path costs. Results: benchmarks/browser-NAME-VARIANT-sampling.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mlx_bluey.bench_record import command_line, machine, write_record  # noqa: E402 (after the checkout joins sys.path)

MESSAGE = "G'day Bluey! What's your favourite game to play with Bingo and Dad?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--variant", default="q8")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout-s", type=int, default=900, help="per reply")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks")
    parser.add_argument("--sampling-cost", action="store_true", help="pair each sampled reply with a greedy one")
    args = parser.parse_args()
    os.environ.pop("LD_PRELOAD", None)  # see tests/test_web.py: OpenBLAS preloaded breaks Chromium's threads
    from playwright.sync_api import sync_playwright

    from mlx_bluey.headless import CHROMIUM_FLAGS, chromium_path
    from mlx_bluey.serve import serve_in_thread

    server, url = serve_in_thread([args.export])
    replies = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#model option').length > 0")
            page.select_option("#model", f"{args.export.name}|{args.variant}")
            page.select_option("#device", "wasm")
            page.evaluate("document.querySelector('details').open = true")  # the settings panel
            started = time.perf_counter()
            page.click("#load")
            page.wait_for_function("window.mlxBluey.ready || window.mlxBluey.error", timeout=args.timeout_s * 1000)
            load_seconds = time.perf_counter() - started
            if page.evaluate("window.mlxBluey.error"):
                raise SystemExit(page.evaluate("window.mlxBluey.error"))
            threads = page.inner_text("#status")
            for field in ("max_new_tokens", "min_new_tokens"):  # after the load, which fills in the model's defaults
                page.fill(f"#{field}", str(args.new_tokens))
            defaults = {f: page.input_value(f"#{f}") for f in ("temperature", "repetition_penalty")}
            modes = ["sampled", "greedy"] if args.sampling_cost else ["sampled"]
            for round_index in range(args.rounds):
                for mode in modes:
                    for field, value in defaults.items():
                        page.fill(f"#{field}", value if mode == "sampled" else {"temperature": "0"}.get(field, "1"))
                    page.click("#reset")  # the same prompt every round
                    page.fill("#message", MESSAGE)
                    page.press("#message", "Enter")
                    page.wait_for_function(
                        "window.mlxBluey.messages.length === 2 || window.mlxBluey.error", timeout=args.timeout_s * 1000
                    )
                    reply = {**page.evaluate("window.mlxBluey.lastReply"), "mode": mode}
                    replies.append(reply)
                    print(
                        f"round {round_index + 1} {mode}: {reply['tokens']} tokens, decode "
                        f"{reply['decodeTokensPerSecond']:.2f} tok/s, prompt ({reply['promptTokens']} tokens) + first "
                        f"token {reply['promptSeconds']:.2f} s",
                        flush=True,
                    )
            browser.close()
    finally:
        server.shutdown()
    if args.sampling_cost:
        return write_sampling_cost(args, replies, threads, load_seconds)
    report = json.loads((args.export / "export.json").read_text())
    size = next(v["mb"] for v in report["variants"] if v["variant"] == args.variant)
    decode = [r["decodeTokensPerSecond"] for r in replies]
    summary = {
        "command": command_line(),
        "export": str(args.export),
        "variant": args.variant,
        "mb": size,
        "device": "wasm",
        "status": threads,
        "load_seconds": round(load_seconds, 1),
        "machine": machine(),
        "new_tokens": args.new_tokens,
        "decode_tokens_per_s": decode,
        "median_decode_tokens_per_s": statistics.median(decode),
        "prompt_seconds": [r["promptSeconds"] for r in replies],
        "replies": [r["text"] for r in replies],
    }
    write_record(
        args.output,
        f"browser-{args.export.name}-{args.variant}",
        summary,
        f"# {args.export.name} {args.variant} ({size} MB) in headless Chromium, WASM",
        f"Page status: {threads}; load {summary['load_seconds']} s.\n\n"
        f"Decode tok/s over {args.rounds} replies of {args.new_tokens} tokens: "
        f"{', '.join(f'{d:.2f}' for d in decode)} (median **{summary['median_decode_tokens_per_s']:.2f}**); "
        f"prompt + first token: {', '.join(f'{p:.2f}' for p in summary['prompt_seconds'])} s.\n",
    )


def write_sampling_cost(args, replies: list[dict], threads: str, load_seconds: float) -> None:
    sampled = [r["decodeTokensPerSecond"] for r in replies if r["mode"] == "sampled"]
    greedy = [r["decodeTokensPerSecond"] for r in replies if r["mode"] == "greedy"]
    ratios = [g / s for s, g in zip(sampled, greedy)]  # paired: the same round, the same page
    summary = {
        "command": command_line(),
        "variant": args.variant,
        "status": threads,
        "load_seconds": round(load_seconds, 1),
        "machine": machine(),
        "new_tokens": args.new_tokens,
        "sampled_tokens_per_s": sampled,
        "greedy_tokens_per_s": greedy,
        "greedy_over_sampled": ratios,
    }
    write_record(
        args.output,
        f"browser-{args.export.name}-{args.variant}-sampling",
        summary,
        f"# What the page's sampling costs: {args.export.name} {args.variant}, headless Chromium, WASM",
        f"Page status: {threads}.\n\n"
        f"Per round, a reply with the page's sampling defaults, then a greedy one without the repetition penalty "
        f"({args.new_tokens} tokens each). Decode tok/s sampled: {', '.join(f'{v:.2f}' for v in sampled)} "
        f"(median {statistics.median(sampled):.2f}); greedy: {', '.join(f'{v:.2f}' for v in greedy)} "
        f"(median {statistics.median(greedy):.2f}). Greedy / sampled, paired per round: "
        f"{', '.join(f'{r:.2f}' for r in ratios)} (median **{statistics.median(ratios):.2f}x**, "
        f"range {min(ratios):.2f}-{max(ratios):.2f}).\n",
    )


if __name__ == "__main__":
    main()
