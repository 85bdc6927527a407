"""Files a training run writes, each replaced atomically (write a temporary name, then rename).

    OUTPUT/adapters.safetensors      best adapter so far (mlx_lm.generate --adapter-path loads it)
    OUTPUT/adapter_config.json       mlx-lm's adapter config
    OUTPUT/checkpoints/step_000050/  adapters + optimizer state + state.json, to resume from
    OUTPUT/metrics.jsonl             one row per logged step
    OUTPUT/manifest.json             base model and its hash, data hash, config, versions
    OUTPUT/loss_curve.png

A run killed at any instant leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from .atomic import atomic_directory, atomic_write_text

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
CHECKPOINT_DIR = "checkpoints"


def atomic_save_safetensors(path: Path, arrays: dict[str, mx.array]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mx.save_safetensors appends ".safetensors" unless the name already ends with it.
    tmp = path.parent / f".{path.stem}.tmp-{os.getpid()}.safetensors"
    try:
        mx.save_safetensors(str(tmp), arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def adapter_config(config, num_layers: int) -> dict:
    """The adapter_config.json that mlx_lm.load_adapters (and so mlx_lm.generate) reads."""
    lora_parameters = {"rank": config.lora_rank, "scale": config.lora_scale, "dropout": config.lora_dropout}
    if config.lora_keys:
        lora_parameters["keys"] = list(config.lora_keys)
    return {
        "fine_tune_type": config.fine_tune_type,
        "num_layers": num_layers,
        "lora_parameters": lora_parameters,
        "base_model": config.model,
    }


def save_adapter(output: Path, model, adapter_cfg: dict) -> None:
    weights = dict(tree_flatten(model.trainable_parameters()))
    atomic_save_safetensors(output / ADAPTER_FILE, weights)
    atomic_write_text(output / ADAPTER_CONFIG, json.dumps(adapter_cfg, indent=2))


def save_checkpoint(output: Path, step: int, model, optimizer, state: dict, keep: int) -> Path:
    """Write checkpoints/step_N as a whole directory, renamed into place, then prune old ones."""
    root = output / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    with atomic_directory(final) as work:
        mx.save_safetensors(str(work / ADAPTER_FILE), dict(tree_flatten(model.trainable_parameters())))
        mx.save_safetensors(str(work / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
        (work / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    for old in list_checkpoints(output)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output: Path) -> list[Path]:
    root = output / CHECKPOINT_DIR
    if not root.exists():
        return []
    complete = [p for p in root.glob("step_*") if (p / "state.json").exists()]
    return sorted(complete, key=lambda p: p.name)


class AdapterMismatch(ValueError):
    """An adapter that does not fit the model as configured; the message names the file and the key."""


def load_start_adapter(model, directory: Path, expected: dict) -> str:
    """Put a finished adapter's weights into the model's (already applied) adapters; return their hash.

    The adapter's kind, layer count, rank, scale and keys must be the config's (`expected` is this run's
    adapter_config), and every weight must have a place of the same shape: nothing is loaded loosely."""
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise AdapterMismatch(f"{path}: not found (from_adapter must be a directory `mlx_bluey train` wrote)")
    try:
        saved = json.loads(config_path.read_text())
        saved_lora = saved.get("lora_parameters") or {}
    except (ValueError, AttributeError) as error:
        raise AdapterMismatch(f"{config_path}: not an adapter config ({error})") from error
    pairs = [("fine_tune_type", saved.get("fine_tune_type"), expected["fine_tune_type"])]
    pairs.append(("num_layers", saved.get("num_layers"), expected["num_layers"]))
    for key in ("rank", "scale", "keys"):
        pairs.append((f"lora_parameters.{key}", saved_lora.get(key), expected["lora_parameters"].get(key)))
    for key, theirs, ours in pairs:
        if theirs != ours:
            raise AdapterMismatch(f"{config_path}: {key} is {theirs!r}, this run's config makes {ours!r}")
    weights = mx.load(str(weights_path))
    places = dict(tree_flatten(model.trainable_parameters()))
    for name, value in weights.items():
        if name not in places or places[name].shape != value.shape:
            raise AdapterMismatch(f"{weights_path}: {name} {tuple(value.shape)} has no place in this model")
    if missing := sorted(places.keys() - weights.keys()):
        raise AdapterMismatch(f"{weights_path}: lacks {len(missing)} adapter weights, e.g. {missing[0]}")
    model.update(tree_unflatten([(k, v.astype(places[k].dtype)) for k, v in weights.items()]))
    return sha256_files([weights_path])


def load_checkpoint(path: Path, model, optimizer) -> dict:
    """Restore adapter weights and optimizer state in place; return the saved state dict."""
    model.load_weights(str(path / ADAPTER_FILE), strict=False)
    optimizer.state = tree_unflatten(list(mx.load(str(path / "optimizer.safetensors")).items()))
    return json.loads((path / "state.json").read_text())


def sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
