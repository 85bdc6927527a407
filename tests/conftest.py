"""Shared fixtures: a tiny random Gemma 3 with a character-level tokenizer, and the real embedded 270M.

The tiny model's tokenizer maps every character to one token, so expected ids in tests can be
written down by hand: ids 0-6 are <pad> <eos> <bos> <unk> <start_of_turn> <end_of_turn> "\\n",
then one id per printable ASCII character, with "▁" standing for a space.
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_bluey import runtime


def pytest_configure(config):
    """Re-exec with OpenBLAS preloaded (and its settings) when run as plain `pytest`.

    Where pytest has pointed fds 1 and 2 at its capture files, an exec inside that capture would print
    the whole run into them (a silent exit 0), so the capture is suspended just before an exec. It is
    never resumed here: pytest runs this hook with it suspended, and resuming it sent the run's
    progress, and faulthandler's traceback of a crash, into capture files nobody reads.
    """
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        runtime.ensure_fast_blas(before_exec=lambda: capture.suspend_global_capture(in_=True))
    else:
        runtime.ensure_fast_blas()


collect_ignore = ["export_env"]  # the export environment's suite, run with .venv-export's Python (Makefile)

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n"]
CHARS = ["▁"] + [c for c in string.printable if c not in " \t\n\r\x0b\x0c"]
TINY_VOCAB = {token: i for i, token in enumerate(SPECIALS + CHARS)}
TINY_CONFIG = {
    "architectures": ["Gemma3ForCausalLM"],
    "model_type": "gemma3_text",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "rms_norm_eps": 1e-6,
    "vocab_size": len(TINY_VOCAB),
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "query_pre_attn_scalar": 16,
    "sliding_window": 32,
    "sliding_window_pattern": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "bos_token_id": 2,
    "eos_token_id": [1, 5],
    "pad_token_id": 0,
}


def make_tiny_tokenizer():
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer

    from mlx_bluey.chat_format import CHAT_TEMPLATE

    tokenizer = GemmaTokenizer(
        vocab=dict(TINY_VOCAB),
        merges=[],
        extra_special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIALS[4:6]]
        + [AddedToken("\n", special=False, normalized=False)],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_sentencepiece() -> bytes:
    """TINY_VOCAB as a SentencePiece model (tokenizer.model, what the GGUF export hands llama.cpp)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    kinds = {"<unk>": pb.ModelProto.SentencePiece.UNKNOWN, "\n": pb.ModelProto.SentencePiece.USER_DEFINED}
    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(TINY_VOCAB)
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id = TINY_VOCAB["<unk>"], TINY_VOCAB["<bos>"]
    proto.trainer_spec.eos_id, proto.trainer_spec.pad_id = TINY_VOCAB["<eos>"], TINY_VOCAB["<pad>"]
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False
    for token, i in TINY_VOCAB.items():
        piece = proto.pieces.add()
        piece.piece, piece.score = token, -float(i)
        piece.type = kinds.get(token, pb.ModelProto.SentencePiece.CONTROL if token in SPECIALS else 1)
    return proto.SerializeToString()


def write_tiny_model(path: Path, seed: int = 0, config: dict | None = None) -> Path:
    """A randomly initialised Gemma 3 saved as an ordinary model directory."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.gemma3_text import Model, ModelArgs

    config = dict(config or TINY_CONFIG)
    path.mkdir(parents=True, exist_ok=True)
    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(config))
    model.sanitize({})  # drops lm_head: the embedding is tied
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (path / "config.json").write_text(json.dumps(config))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 5]}))
    make_tiny_tokenizer().save_pretrained(str(path))
    (path / "tokenizer.model").write_bytes(tiny_sentencepiece())
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    from mlx_bluey.embedded import ensure_embedded_model

    return ensure_embedded_model(log=lambda _: None)


# A short, fast run on the tiny model: 4 conversations a step, validation every 3 steps, a checkpoint every 2.
TINY_TRAINING = dict(
    batch_size=4, grad_accumulation=1, learning_rate=1e-2, warmup_steps=2, val_every=3, save_every=2, lora_rank=4
)


def tiny_train_config(tiny_model_dir, data, output, **changes):
    """TrainConfig of a TINY_TRAINING run of 6 steps; `changes` override."""
    from mlx_bluey.config import TrainConfig

    base = dict(model=str(tiny_model_dir), data=str(data), output=str(output), iters=6, progress=False)
    return TrainConfig(**{**base, **TINY_TRAINING, **changes})


def train_command(model, data, output, **options) -> list[str]:
    """`mlx_bluey train` as a subprocess argv, each option as its flag:
    train_command(m, d, o, iters=3, grad_checkpoint=True) -> [..., "--iters", "3", "--grad-checkpoint"]."""
    command = [sys.executable, "-m", "mlx_bluey.cli", "train", "--model", str(model), "--data", str(data)]
    command += ["--output", str(output), "--no-progress"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        command += [flag] if value is True else [f"--no-{flag[2:]}"] if value is False else [flag, str(value)]
    return command


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(*turns: str, system: str | None = None) -> dict:
    """chat("hi", "G'day!", "more?", "Yes!") -> {"messages": [user, assistant, user, assistant]}"""
    messages = [{"role": "system", "content": system}] if system else []
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return {"messages": messages}


# ------------------------------------------------------------------ fuse -> export (test_export, test_web)

REPLY = "Hooray! Bingo and me are playing shops, and Dad is the customer!"


@pytest.fixture(scope="session")
def tiny_fused(tmp_path_factory, tiny_model_dir) -> Path:
    """A tiny adapter trained until it says REPLY, fused; its data has a character card beside it."""
    from mlx_bluey.config import TrainConfig
    from mlx_bluey.train import train

    root = tmp_path_factory.mktemp("fused")
    data = write_jsonl(root / "data" / "train.jsonl", [chat(f"hi {i}", REPLY) for i in range(8)]).parent
    (data / "character.yaml").write_text(
        "name: Bluey\ndescription: A tiny test pup.\ndefault_system_prompt: You are Bluey.\n"
    )
    adapter = root / "adapter"
    train(
        TrainConfig(
            model=str(tiny_model_dir),
            data=str(data),
            output=str(adapter),
            # 100 steps at 1e-2 take the loss from 6.75 to 0.04 (greedy says REPLY on either kernel); 30 at 5e-2,
            # the old setting, stopped at 2.1 and said nothing in particular
            iters=100,
            batch_size=4,
            grad_accumulation=1,
            learning_rate=1e-2,
            lora_rank=8,
            progress=False,
        ),
        log=lambda _: None,
    )
    fused = root / "fused"
    result = fuse_with_cli(adapter, fused)
    assert result.returncode == 0, result.stderr
    return fused


def run_cli(*args, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """`mlx_bluey ARGS` in its own process, as a user runs it; its stdout and stderr as text. The timeout
    turns a hang into a failure; kwargs (env, input, cwd, check) go to subprocess.run."""
    command = [sys.executable, "-m", "mlx_bluey.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def fuse_with_cli(adapter: Path, output: Path) -> subprocess.CompletedProcess:
    """`mlx_bluey fuse --adapter ADAPTER --output OUTPUT`, as a user runs it."""
    return run_cli("fuse", "--adapter", adapter, "--output", output)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_fused) -> Path:
    """tiny_fused exported (all six variants, parity on two held-out conversations) by `mlx_bluey export`;
    int8-vocab keeps the ids of tiny_fused's training data only (--vocabulary-common 0)."""

    out = tmp_path_factory.mktemp("export") / "bluey-tiny"
    held_out = write_jsonl(
        tmp_path_factory.mktemp("heldout") / "test.jsonl",
        [chat("what are you playing?", REPLY), chat("hello", "G'day! Let's play!", "more", "Okay!")],
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlx_bluey.cli",
            "export",
            str(tiny_fused),
            "--output",
            str(out),
            "--variants",
            "int8,int8-vocab,q8,q4,fp16,fp32",
            "--vocabulary-data",
            str(tiny_fused.parent / "data" / "train.jsonl"),
            "--vocabulary-common",
            "0",
            "--parity-data",
            str(held_out),
            "--parity-texts",
            "2",
            "--greedy-prompts",
            "2",
            "--greedy-tokens",
            "16",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[3/3] parity" in result.stdout  # the progress lines reach the user
    return out


def model_with_live_adapters(tiny_model_dir, **config):
    """The tiny model with rank-4 LoRA whose B is non-zero, so every adapter changes the output."""
    import mlx.core as mx

    from mlx_bluey.config import TrainConfig
    from mlx_bluey.train import apply_adapters, load_base

    model, _, _ = load_base(tiny_model_dir, "float32")
    apply_adapters(model, TrainConfig(lora_rank=4, **config))
    for _, module in model.named_modules():
        if hasattr(module, "lora_b"):
            module.lora_b = mx.random.normal(module.lora_b.shape) * 0.1
    return model
