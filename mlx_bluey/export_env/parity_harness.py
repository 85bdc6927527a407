"""The export worker's parity harness: an exported ONNX decoder fed as Transformers.js feeds it, against the
fused model loaded by transformers in fp32 (runs in the export environment).

The summary figures (top-1 agreement, KL, greedy identical prefixes) come from mlx_bluey.parity, which the
GGUF export shares.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ..parity import compare_logits, identical_prefix, summarise


class OrtDecoder:
    """One ONNX decoder session fed the way Transformers.js feeds it: ids, mask, past key/values."""

    def __init__(self, path: Path, threads: int = 0, config: dict[str, str] | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        for key, value in (config or {}).items():  # a variant's session_config (the page passes the same)
            options.add_session_config_entry(key, value)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.past = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values")]
        self.float = np.float16 if self.past and self.past[0].type == "tensor(float16)" else np.float32

    def empty_past(self) -> dict:
        return {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=self.float) for i in self.past}

    def step(self, ids: list[int], past: dict, seen: int):
        feeds = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, seen + len(ids)), dtype=np.int64),
            **past,
        }
        outputs = self.session.run(None, feeds)
        names = [o.name for o in self.session.get_outputs()]
        logits = outputs[names.index("logits")][0].astype(np.float32)
        present = {
            n.replace("present", "past_key_values"): v for n, v in zip(names, outputs) if n.startswith("present")
        }
        return logits, present

    def greedy(self, prompt: list[int], new_tokens: int, stops: set[int]) -> tuple[list[int], float]:
        """Greedy decode with the KV cache; returns the tokens and decode tokens/s (prompt excluded)."""
        logits, past = self.step(prompt, self.empty_past(), 0)
        out, seen = [], len(prompt)
        started = time.perf_counter()
        for _ in range(new_tokens):
            token = int(logits[-1].argmax())
            out.append(token)
            if token in stops:
                break
            logits, past = self.step([token], past, seen)
            seen += 1
        elapsed = time.perf_counter() - started
        return out, (len(out) - 1) / elapsed if len(out) > 1 and elapsed > 0 else 0.0


def reference_outputs(
    fused: Path, texts: list[list[int]], prompts: list[list[int]], new_tokens: int, stops: set[int]
) -> dict:
    """Logits (full sequences) and greedy continuations of the fused model loaded by transformers (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(fused), torch_dtype=torch.float32).eval()
    # Plain argmax, as the ONNX side. fuse writes the sampling defaults into the fused directory's
    # generation_config.json (do_sample, top-k/p, repetition penalty 1.1); transformers >= 4.50 copies a model
    # default into a passed config wherever the passed value equals the library default (repetition_penalty 1.0,
    # do_sample False are such values), unless use_model_defaults=False.
    greedy_config = GenerationConfig(
        max_new_tokens=new_tokens,
        do_sample=False,
        repetition_penalty=1.0,
        eos_token_id=sorted(stops),
        pad_token_id=0,
    )
    with torch.no_grad():
        logits = [model(torch.tensor([ids])).logits[0].numpy() for ids in texts]
        greedy = []
        for prompt in prompts:
            ids = torch.tensor([prompt])
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), generation_config=greedy_config, use_model_defaults=False
            )
            greedy.append(out[0, len(prompt) :].tolist())
    return {"logits": logits, "greedy": greedy}


def variant_parity(
    path: Path, reference: dict, texts, prompts, new_tokens: int, stops: set[int], config: dict[str, str] | None = None
) -> dict:
    """Top-1 agreement and KL of the variant's logits on the held-out texts, greedy prefixes, ORT decode tok/s."""
    from tqdm import tqdm

    decoder = OrtDecoder(path, config=config)
    progress = tqdm(
        total=len(texts) + len(prompts), desc=f"      {path.name}", unit="item", file=sys.stderr, leave=False
    )
    parts = []
    for ids, ref in zip(texts, reference["logits"]):
        parts.append(compare_logits(ref, decoder.step(ids, decoder.empty_past(), 0)[0]))
        progress.update()
    same_prefix, total, speeds = [], 0, []
    for prompt, want in zip(prompts, reference["greedy"]):
        got, speed = decoder.greedy(prompt, new_tokens, stops)
        progress.update()
        speeds.append(speed)
        same_prefix.append(identical_prefix(want, got))
        total += len(want)
    progress.close()
    return summarise(parts, same_prefix, total, speeds, "ort_decode_tokens_per_s")
