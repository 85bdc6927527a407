"""The PyTorch + PEFT peer of scripts/bench_peers.py (runs in .venv-export: torch 2.13.0 CPU, transformers, peft).

    .venv-export/bin/python scripts/torch_peft_child.py MODEL_DIR ENCODED.json PLAN.json RECORD.jsonl HEAD LORA_JSON

The same work as the MLX trainers: LoRA (rank, scale = alpha / rank and dropout from LORA_JSON) on
every linear of every block, float32, AdamW, on conversations already tokenized by mlx_bluey (ids +
which tokens are targets: the reply and its <end_of_turn>), in the batches of PLAN.json (step i
trains rows PLAN[i]), each padded to its longest row. HEAD "all": the usual transformers loss, logits
for every position, cross-entropy where labels != -100. HEAD "labels": the body's hidden states, then
the output head only at the positions that predict a target (what mlx_bluey does), same loss.
RECORD's first line is the effective settings read back from the model; then one JSON line per step.
"""

import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

model_dir, encoded_path, plan_path, record, head = sys.argv[1:6]
lora = json.loads(sys.argv[6])
torch.manual_seed(0)
torch.set_num_threads(os.cpu_count())
rows = json.load(open(encoded_path))
plan = json.load(open(plan_path))
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
config = LoraConfig(
    r=lora["rank"],
    lora_alpha=lora["scale"] * lora["rank"],
    lora_dropout=lora["dropout"],
    task_type="CAUSAL_LM",
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
)
model = get_peft_model(model, config)
model.train()
trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
optimizer = torch.optim.AdamW([p for _, p in trainable], lr=lora["learning_rate"])
base = model.get_base_model()  # Gemma3ForCausalLM with the LoRA layers in it


def loss_at_labels(ids, mask, labels):
    hidden = base.model(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]  # position t predicts token t + 1
    keep = targets != -100
    logits = base.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


with open(record, "w") as out:
    lora_config = model.peft_config["default"]
    settings = {
        "rank": lora_config.r,
        "scale": lora_config.lora_alpha / lora_config.r,
        "dropout": lora_config.lora_dropout,
        "layers": len({name.split("layers.")[1].split(".")[0] for name, _ in trainable if "layers." in name}),
        "batch_size": len(plan[0]),
        "trainable_parameters": sum(p.numel() for _, p in trainable),
    }
    out.write(json.dumps(settings) + "\n")
    for step, indices in enumerate(plan):
        batch = [rows[i] for i in indices]
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
        if head == "labels":
            loss = loss_at_labels(ids, mask, labels)
        else:
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
