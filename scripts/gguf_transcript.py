"""A transcript of llama.cpp chatting with an exported GGUF: the file's own chat template and sampling defaults.

    .venv/bin/python scripts/gguf_transcript.py exports/bluey-270m-gguf/bluey-270m-gguf-Q4_K_M.gguf \
        --prompts data/eval/prompts.jsonl --count 8 --output reports/gguf-bluey-270m/transcript.md

llama-cpp-python's create_chat_completion renders the prompt with the chat template stored in the GGUF
(the training template) and stops on <end_of_turn>/<eos>; temperature, top-p, top-k, min-p and the
repetition penalty are the ones the GGUF stores (general.sampling.*, the CLI's defaults), with a fixed seed.
The prompts are held-out evaluation prompts (data/eval/prompts.jsonl), each conversation as written there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from llama_cpp import Llama

    from mlx_bluey.generation_settings import GenerationSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--prompts", type=Path, default=ROOT / "data" / "eval" / "prompts.jsonl")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    d = GenerationSettings()
    llm = Llama(model_path=str(args.gguf), n_ctx=2048, verbose=False, n_threads=os.cpu_count(), seed=args.seed)
    rows = [json.loads(line) for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = [
        f"# llama.cpp chatting with `{args.gguf.name}`",
        "",
        f"Command: `.venv/bin/python scripts/gguf_transcript.py {' '.join(sys.argv[1:])}`",
        "",
        f"llama-cpp-python {__import__('llama_cpp').__version__}; the GGUF's chat template; temperature "
        f"{d.temperature}, top-p {d.top_p}, top-k {d.top_k}, repetition penalty {d.repetition_penalty}, "
        f"max {d.max_new_tokens} tokens, seed {args.seed}. The first {args.count} held-out prompts of "
        f"{args.prompts.relative_to(ROOT) if args.prompts.is_relative_to(ROOT) else args.prompts}, unedited replies.",
        "",
    ]
    for row in rows[: args.count]:
        started = time.perf_counter()
        response = llm.create_chat_completion(
            messages=row["messages"],
            temperature=d.temperature,
            top_p=d.top_p,
            top_k=d.top_k,
            min_p=d.min_p,
            repeat_penalty=d.repetition_penalty,
            max_tokens=d.max_new_tokens,
            seed=args.seed,
        )
        seconds = time.perf_counter() - started
        choice = response["choices"][0]
        lines += [f"## {row['id']}", ""]
        lines += [f"**{m['role']}:** {m['content']}  " for m in row["messages"]]
        lines += [
            f"**Bluey (llama.cpp):** {choice['message']['content'].strip()}",
            "",
            f"*{response['usage']['completion_tokens']} tokens, finish: {choice['finish_reason']}, {seconds:.1f} s*",
            "",
        ]
        print(f"{row['id']}: {choice['message']['content'].strip()[:100]}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
