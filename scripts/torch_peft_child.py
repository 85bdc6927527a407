"""The PyTorch + PEFT peer of scripts/bench_peers.py (runs in .venv-export: torch 2.13.0 CPU, transformers 4.57, peft).

    .venv-export/bin/python scripts/torch_peft_child.py MODEL_DIR ENCODED.json STEPS BATCH RECORD.jsonl

The same work as the MLX trainers: LoRA rank 8, scale 20 (alpha 160), on every linear of every block,
float32, AdamW at 1e-5, on conversations already tokenized by mlx_bluey (ids + which tokens are targets:
the reply and its <end_of_turn>), so all three train on identical tokens. Batches: sorted by length,
padded to the longest in the batch (what mlx_lm.lora does), in shuffled order. The loss is the usual
transformers one: logits for every position, cross-entropy where labels != -100. One JSON line per step.
"""

import json
import os
import random
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

model_dir, encoded_path, steps, batch_size, record = (
    sys.argv[1],
    sys.argv[2],
    int(sys.argv[3]),
    int(sys.argv[4]),
    sys.argv[5],
)
torch.manual_seed(0)
torch.set_num_threads(os.cpu_count())
rows = json.load(open(encoded_path))
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
model = get_peft_model(
    model,
    LoraConfig(
        r=8,
        lora_alpha=160,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    ),
)
model.train()
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

rows.sort(key=lambda r: len(r["ids"]))
batches = [rows[i : i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)]
random.Random(0).shuffle(batches)
with open(record, "w") as out:
    for step in range(steps):
        batch = batches[step % len(batches)]
        width = max(len(r["ids"]) for r in batch)
        ids = torch.tensor([r["ids"] + [0] * (width - len(r["ids"])) for r in batch])
        mask = torch.tensor([[1] * len(r["ids"]) + [0] * (width - len(r["ids"])) for r in batch])
        # labels[i] = ids[i] where token i is a target; transformers shifts them by one inside the loss
        labels = torch.tensor(
            [
                [t if keep else -100 for t, keep in zip(r["ids"], r["labels"])] + [-100] * (width - len(r["ids"]))
                for r in batch
            ]
        )
        trained = sum(sum(r["labels"]) for r in batch)
        started = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds = time.perf_counter() - started
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: kilobytes
        out.write(
            json.dumps(
                {
                    "step": step + 1,
                    "loss": loss.item(),
                    "seconds": seconds,
                    "trained_tokens": trained,
                    "trained_tokens_per_second": trained / seconds,
                    "peak_rss_gb": peak_gb,
                }
            )
            + "\n"
        )
        out.flush()
