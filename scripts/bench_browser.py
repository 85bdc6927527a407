"""Decode speed of an export in the chat page itself: headless Chromium, WASM, as a user runs it.

    .venv/bin/python scripts/bench_browser.py exports/bluey-270m --variant int8 --record-speed

Serves the export with `mlx_bluey serve`'s server, loads the variant in Debian's chromium (Playwright,
the flags of tests/test_web.py), makes one warm-up reply (not counted: onnxruntime plans its buffers on the
first run), then sends the same message --rounds times with "min new tokens" = "max new tokens" =
--new-tokens, so every reply has exactly that many tokens. The page's worker times each token as
Transformers.js streams it: decode tok/s excludes the prompt; the prompt and the first new token are
timed apart (time to first token). Reported: median and range of each, the load time, the peak resident
memory of Chromium's renderer processes (the tab, its worker and its WASM heap; VmHWM) and the commit the
page ran from. Results: benchmarks/browser-NAME-VARIANT.{json,md}; --record-speed also writes the median
decode speed into mlx_bluey/web/speeds.json, where `serve` reads the page's default variant from.

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
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mlx_bluey.atomic import atomic_write_text  # noqa: E402 (after the checkout joins sys.path)
from mlx_bluey.bench_record import command_line, machine, write_record  # noqa: E402

MESSAGE = "G'day Bluey! What's your favourite game to play with Bingo and Dad?"


def renderer_peak_mb() -> float:
    """Sum of VmHWM (peak resident set) over Chromium's renderer processes: the page, its worker, the WASM heap."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if "--type=renderer" not in (status.parent / "cmdline").read_bytes().decode(errors="replace"):
                continue
            line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        except (OSError, StopIteration):  # a process that ended meanwhile
            continue
        total += int(line.split()[1])  # kB
    return round(total / 1024, 1)


def page_commit() -> str:
    """HEAD of the checkout the page's files come from, '+dirty' when mlx_bluey/web has local changes."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "mlx_bluey/web"], capture_output=True, text=True
    )
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


def spread(values: list[float]) -> dict:
    """Median and range of one measurement over the counted replies."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def record_speed(speeds_path: Path, variant: str, decode_median: float, benchmark: str) -> None:
    """Write (or replace) the variant's measured WASM decode speed in speeds.json, keeping the others."""
    speeds = json.loads(speeds_path.read_text()) if speeds_path.exists() else {}
    speeds.setdefault(
        "about",
        "Decode tok/s of the chat page on WASM (headless Chromium, 2 threads), median of the replies of the named "
        "benchmark (scripts/bench_browser.py --record-speed). serve.py picks the page's default variant from it.",
    )
    wasm = speeds.setdefault("wasm", {})
    wasm[variant] = {"decode_tokens_per_s": round(decode_median, 2), "benchmark": benchmark}
    speeds["wasm"] = dict(sorted(wasm.items()))
    atomic_write_text(speeds_path, json.dumps(speeds, indent=2) + "\n")


def send(page, timeout_s: int) -> dict:
    page.click("#reset")  # the same prompt every time
    page.fill("#message", MESSAGE)
    page.press("#message", "Enter")
    page.wait_for_function("window.mlxBluey.messages.length === 2 || window.mlxBluey.error", timeout=timeout_s * 1000)
    if page.evaluate("window.mlxBluey.error"):
        raise SystemExit(page.evaluate("window.mlxBluey.error"))
    return page.evaluate("window.mlxBluey.lastReply")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5, help="counted replies, after one warm-up reply")
    parser.add_argument("--timeout-s", type=int, default=900, help="per reply")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks")
    parser.add_argument("--sampling-cost", action="store_true", help="pair each sampled reply with a greedy one")
    parser.add_argument(
        "--record-speed", action="store_true", help="write the median decode speed into mlx_bluey/web/speeds.json"
    )
    args = parser.parse_args()
    os.environ.pop("LD_PRELOAD", None)  # see tests/test_web.py: OpenBLAS preloaded breaks Chromium's threads
    from playwright.sync_api import sync_playwright

    from mlx_bluey.headless import CHROMIUM_FLAGS, chromium_path
    from mlx_bluey.serve import SPEEDS, serve_in_thread

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
            error = page.evaluate("window.mlxBluey.error")
            if error:  # a variant that does not load in the tab is a result too: recorded, then a non-zero exit
                memory_mb = renderer_peak_mb()
                browser.close()
                write_load_failure(args, error, load_seconds, memory_mb)
                raise SystemExit(error)
            threads = page.inner_text("#status")
            for field in ("max_new_tokens", "min_new_tokens"):  # after the load, which fills in the model's defaults
                page.fill(f"#{field}", str(args.new_tokens))
            defaults = {f: page.input_value(f"#{f}") for f in ("temperature", "repetition_penalty")}
            warm_up = send(page, args.timeout_s)
            print(f"warm-up (not counted): decode {warm_up['decodeTokensPerSecond']:.2f} tok/s", flush=True)
            modes = ["sampled", "greedy"] if args.sampling_cost else ["sampled"]
            for round_index in range(args.rounds):
                for mode in modes:
                    for field, value in defaults.items():
                        page.fill(f"#{field}", value if mode == "sampled" else {"temperature": "0"}.get(field, "1"))
                    reply = {**send(page, args.timeout_s), "mode": mode}
                    replies.append(reply)
                    print(
                        f"round {round_index + 1} {mode}: {reply['tokens']} tokens, decode "
                        f"{reply['decodeTokensPerSecond']:.2f} tok/s, prompt ({reply['promptTokens']} tokens) + first "
                        f"token {reply['promptSeconds']:.2f} s",
                        flush=True,
                    )
            memory_mb = renderer_peak_mb()
            browser.close()
    finally:
        server.shutdown()
    if args.sampling_cost:
        return write_sampling_cost(args, replies, threads, load_seconds, memory_mb)
    decode = [r["decodeTokensPerSecond"] for r in replies]
    first = [r["promptSeconds"] for r in replies]
    name = f"browser-{args.export.name}-{args.variant}"
    summary = {
        **run_facts(args, load_seconds, memory_mb),
        "status": threads,
        "new_tokens": args.new_tokens,
        "warm_up_decode_tokens_per_s": warm_up["decodeTokensPerSecond"],
        "decode_tokens_per_s": decode,
        "decode": spread(decode),
        "median_decode_tokens_per_s": statistics.median(decode),
        "prompt_seconds": first,
        "time_to_first_token": spread(first),
        "prompt_tokens": replies[0]["promptTokens"],
        "replies": [r["text"] for r in replies],
    }
    d, t, size = summary["decode"], summary["time_to_first_token"], summary["mb"]
    write_record(
        args.output,
        name,
        summary,
        f"# {args.export.name} {args.variant} ({size} MB) in headless Chromium, WASM",
        f"Page status: {threads}; page from commit {summary['page_commit']}; load {summary['load_seconds']} s; "
        f"peak resident memory of the renderer processes {memory_mb} MB.\n\n"
        f"Decode tok/s over {args.rounds} replies of {args.new_tokens} tokens after a warm-up reply: "
        f"{', '.join(f'{x:.2f}' for x in decode)} (median **{d['median']:.2f}**, range {d['min']:.2f}-{d['max']:.2f}); "
        f"time to first token (prompt of {summary['prompt_tokens']} tokens + the first new one): "
        f"{', '.join(f'{x:.2f}' for x in first)} s (median {t['median']:.2f}).\n",
    )
    if args.record_speed:
        record_speed(SPEEDS, args.variant, d["median"], f"benchmarks/{name}.json")


def run_facts(args, load_seconds: float, memory_mb: float) -> dict:
    """What every page record says: the command, the variant and its download size, the page's commit, the load
    time, the tab's peak memory and the machine."""
    report = json.loads((args.export / "export.json").read_text())
    return {
        "command": command_line(),
        "export": str(args.export),
        "variant": args.variant,
        "mb": next(v["mb"] for v in report["variants"] if v["variant"] == args.variant),
        "device": "wasm",
        "page_commit": page_commit(),
        "load_seconds": round(load_seconds, 1),
        "renderer_peak_mb": memory_mb,
        "machine": machine(blas=False),  # the page computes in WASM, not with BLAS
    }


def write_load_failure(args, error: str, load_seconds: float, memory_mb: float) -> None:
    summary = {**run_facts(args, load_seconds, memory_mb), "error": error}
    size = summary["mb"]
    write_record(
        args.output,
        f"browser-{args.export.name}-{args.variant}",
        summary,
        f"# {args.export.name} {args.variant} ({size} MB) in headless Chromium, WASM: did not load",
        f"Page from commit {summary['page_commit']}; the page said after {summary['load_seconds']} s: {error}\n\n"
        f"Peak resident memory of the renderer processes: {memory_mb} MB.\n",
    )


def write_sampling_cost(args, replies: list[dict], threads: str, load_seconds: float, memory_mb: float) -> None:
    sampled = [r["decodeTokensPerSecond"] for r in replies if r["mode"] == "sampled"]
    greedy = [r["decodeTokensPerSecond"] for r in replies if r["mode"] == "greedy"]
    ratios = [g / s for s, g in zip(sampled, greedy)]  # paired: the same round, the same page
    summary = {
        **run_facts(args, load_seconds, memory_mb),
        "status": threads,
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
        f"Page status: {threads}; page from commit {summary['page_commit']}.\n\n"
        f"Per round, a reply with the page's sampling defaults, then a greedy one without the repetition penalty "
        f"({args.new_tokens} tokens each). Decode tok/s sampled: {', '.join(f'{v:.2f}' for v in sampled)} "
        f"(median {statistics.median(sampled):.2f}); greedy: {', '.join(f'{v:.2f}' for v in greedy)} "
        f"(median {statistics.median(greedy):.2f}). Greedy / sampled, paired per round: "
        f"{', '.join(f'{r:.2f}' for r in ratios)} (median **{statistics.median(ratios):.2f}x**, "
        f"range {min(ratios):.2f}-{max(ratios):.2f}).\n",
    )


if __name__ == "__main__":
    main()
