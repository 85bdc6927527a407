"""The `mlx_bluey` command. This module only parses arguments into each verb's typed arguments and turns the
verbs' errors into messages; each verb lives in its own module.

mlx_bluey info                       device, BLAS, dtype, the embedded model
mlx_bluey train [--config FILE] ...  fine-tune: SFT or preference (train.py, trainer.py)
mlx_bluey generate [--adapter DIR]   chat or one-shot reply (chat.py, on generation.py)
mlx_bluey evaluate --adapter DIR     personality metrics and report (evaluate.py, metrics.py)
mlx_bluey compare REPORTS... --output DIR   evaluations side by side (compare.py)
mlx_bluey bench                      tokens/s across models and dtypes (bench.py)
mlx_bluey fuse --adapter DIR --output DIR   adapter merged into a Hugging Face model (fuse.py)
mlx_bluey export SOURCE --output DIR  ONNX (export_env/, in the export environment), GGUF or PEFT (export.py)
mlx_bluey serve EXPORT               the chat page on localhost with an exported model (serve.py, web/)
mlx_bluey data validate|stats|split|pairs FILES  dataset tools (data_validate.py, data_stats.py, data_split.py,
                                     data_pairs.py)
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from pathlib import Path

import click

from . import runtime
from .bench_args import BenchArgs
from .config import CHOICES, TrainConfig, field_help, field_types
from .data_split import SPLIT_SEED, TEST_SHARE, VALID_SHARE
from .evaluation_args import ASSISTANT_REPLIES, EvaluationArgs
from .export_args import DEFAULT_VARIANTS, FORMATS, ONNX_VARIANTS, ExportArgs
from .generation_settings import GenerationSettings
from .serve import HOST, PORT
from .text import SHORT_WORDS


def _fail(error: Exception) -> None:
    raise click.ClickException(str(error)) from error


def _user_errors():
    from .config import ConfigError
    from .data import DataError
    from .models import ModelError

    return (ConfigError, DataError, ModelError, FileNotFoundError)


HELP = {"min_new_tokens": "Block every stop id until N tokens."}


def sampling_options(command):
    """--max-new-tokens ... --repetition-penalty, their defaults GenerationSettings' (one place for them)."""
    for field in reversed(dataclasses.fields(GenerationSettings)):
        if field.name != "seed":
            command = option_from(GenerationSettings, field.name, help=HELP.get(field.name))(command)
    return command


def config_options(command):
    """One option per TrainConfig key (--lora-rank, --grad-checkpoint/--no-grad-checkpoint, ...), its help the
    key's docstring. Unset options are None: the config file's value, else TrainConfig's default, stands."""
    helps = field_help()
    for name, hint in reversed(field_types().items()):
        flag = "--" + name.replace("_", "-")
        if hint is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", default=None, help=helps.get(name))
        elif hint in (int, float):
            option = click.option(flag, type=hint, help=helps.get(name))
        elif name in CHOICES:
            option = click.option(flag, type=click.Choice(CHOICES[name]), help=helps.get(name))
        elif any(typing.get_origin(kind) is list for kind in typing.get_args(hint)):
            continue  # lora_keys: a list, set in the YAML file
        else:
            option = click.option(flag, help=helps.get(name))
        command = option(command)
    return command


def system_options(command):
    """--system and --system-from-card, for every command that sends prompts (character.system_prompt)."""
    command = click.option(
        "--system-from-card", is_flag=True, help="The character card's default_system_prompt as --system."
    )(command)
    return click.option(
        "--system",
        default=None,
        help="A system message before the conversation (a prompt's own one wins); '' = none. "
        "Default: the one the model was trained with (an adapter's manifest, a fused model's character.json).",
    )(command)


def option_from(arguments, name: str, *declarations, **kwargs):
    """click.option for field `name` of a typed-arguments class, with that field's default (its one home)."""
    default = getattr(arguments, name)
    kwargs.setdefault("type", type(default))
    return click.option(
        *(declarations or ["--" + name.replace("_", "-")]), default=default, show_default=True, **kwargs
    )


@click.group()
@click.version_option(package_name="mlx-bluey")
def cli() -> None:
    """Teach a small Gemma 3 a character's personality with MLX LoRA."""


@cli.command()
def info() -> None:
    """Show the device, BLAS and default dtype MLX runs with here."""
    import mlx.core as mx

    from .embedded import embedded_model_dir, is_converted

    click.echo(f"mlx {mx.__version__}: device {runtime.device_name()}, default dtype {runtime.default_dtype_name()}")
    click.echo(f"CPU: {runtime.describe_cpu()}")
    click.echo(f"BLAS: {runtime.describe_blas(runtime.blas_facts())}")
    state = "converted" if is_converted(embedded_model_dir()) else "not converted yet (first use converts it)"
    click.echo(f"embedded model: {embedded_model_dir()} ({state})")


@cli.command()
@click.option("--config", "config_path", type=click.Path(), help="YAML config (see configs/).")
@config_options
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --output.")
@click.option("--overwrite", is_flag=True, help="Discard a previous run in --output and start again.")
def train(config_path, resume, overwrite, **overrides) -> None:
    """Fine-tune a Gemma 3 on chat JSONL (what `make train` runs)."""
    from .character import CardError
    from .config import load_config
    from .distributed import DistributedError
    from .train import TrainError
    from .train import train as run_training

    try:
        config = load_config(config_path, overrides)
        run_training(config, resume=resume, overwrite=overwrite, log=click.echo)
    except (*_user_errors(), TrainError, DistributedError, CardError) as error:
        _fail(error)


@cli.command()
@click.option("--model", help="Base model: registry name, HF id, directory (a fused model too).")
@click.option("--adapter", type=click.Path(), help="Adapter directory from `mlx_bluey train`.")
@click.option("--prompt", help="One message; print the reply and exit (default: interactive chat).")
@system_options
@click.option(
    "--character",
    "character_path",
    type=click.Path(),
    help="Character card (default: the one beside the adapter's training data).",
)
@sampling_options
@click.option("--seed", type=int, default=None)
@click.option("--dtype", type=click.Choice(CHOICES["dtype"]), default=TrainConfig.dtype)
def generate(model, adapter, prompt, system, character_path, system_from_card, dtype, **settings) -> None:
    """Chat with a model (base, base + adapter, or fused)."""
    from .character import CardError
    from .chat import ChatArgs
    from .chat import run as run_generate

    arguments = ChatArgs(
        model=model,
        adapter=adapter,
        prompt=prompt,
        system=system,
        character=character_path,
        system_from_card=system_from_card,
        dtype=dtype,
        settings=GenerationSettings(**settings),
    )
    try:
        run_generate(arguments, log=lambda m: click.echo(m, err=True))
    except (*_user_errors(), CardError) as error:
        _fail(error)


@cli.command()
@click.option("--model", help="Base model (default: the adapter's base, else the embedded 270M).")
@click.option(
    "--adapter", type=click.Path(), help="Adapter directory from `mlx_bluey train` (omit for the base model)."
)
@option_from(EvaluationArgs, "prompts_file", "--prompts", "prompts_file", type=click.Path())
@option_from(EvaluationArgs, "samples", help="Replies per prompt.")
@click.option("--limit", type=int, help="Only the first N prompts (quick runs).")
@option_from(EvaluationArgs, "seed", help="Sample s of every prompt uses seed + s.")
@click.option(
    "--reference",
    type=click.Path(),
    help="Held-out replies for the loss [default: test.jsonl of the adapter's data, else data/bluey].",
)
@click.option(
    "--train-data",
    type=click.Path(),
    help="Training replies: length, voice and overlap references [default: train.jsonl beside it].",
)
@click.option(
    "--character",
    "character_path",
    type=click.Path(),
    help="Character card: voice and break-character markers [default: character.yaml beside it].",
)
@click.option(
    "--base-likelihood/--no-base-likelihood", default=True, help="Also measure the held-out loss without the adapter."
)
@click.option("--output", required=True, type=click.Path(), help="Directory for results.json, report.md, lengths.png.")
@sampling_options
@option_from(
    EvaluationArgs,
    "few_shot",
    help="Put N training conversations before every prompt (the prompting-instead-of-tuning baseline).",
)
@option_from(EvaluationArgs, "long_reply_tokens", help="max_new_tokens for prompts that ask for a long answer.")
@system_options
@click.option(
    "--assistant-replies",
    default=ASSISTANT_REPLIES,
    show_default=True,
    type=click.Path(),
    help="Generic assistant replies: the in-character classifier's other side ('' = no classifier).",
)
@click.option(
    "--rescore",
    is_flag=True,
    help="Score the replies already in OUTPUT/results.json again with today's metrics; no model, no generation.",
)
def evaluate(
    model,
    adapter,
    prompts_file,
    samples,
    limit,
    seed,
    reference,
    train_data,
    character_path,
    base_likelihood,
    output,
    few_shot,
    long_reply_tokens,
    system,
    system_from_card,
    assistant_replies,
    rescore,
    **settings,
) -> None:
    """Generate samples for an evaluation prompt set and measure personality, not just loss."""
    from .character import CardError, load_card, system_prompt
    from .evaluate import reference_files, saved_result
    from .evaluate import rescore as rescore_evaluation
    from .evaluate import run as run_evaluation
    from .system_message import served_system

    try:
        if rescore:  # the earlier run's adapter points at its data, as it did then
            adapter = adapter or saved_result(output).get("model", {}).get("adapter")
        reference, train_data, character_path = reference_files(adapter, reference, train_data, character_path)
        click.echo(
            f"references: {train_data} (training replies), {reference} (held-out loss), {character_path} (card)",
            err=True,
        )
        if rescore:
            rescore_evaluation(
                output, reference, train_data, load_card(character_path), assistant_replies or None, log=click.echo
            )
            return
        card = load_card(character_path)
        arguments = EvaluationArgs(
            output=output,
            reference=reference,
            train_data=train_data,
            card=card,
            model=model,
            adapter=adapter,
            prompts_file=prompts_file,
            samples=samples,
            limit=limit,
            seed=seed,
            base_likelihood=base_likelihood,
            settings=GenerationSettings(**settings),
            few_shot=few_shot,
            system=system_prompt(card, system, system_from_card, served_system(adapter, model)),
            long_reply_tokens=long_reply_tokens,
            assistant_replies=assistant_replies or None,
        )
        run_evaluation(arguments, log=click.echo)
    except (*_user_errors(), CardError) as error:
        _fail(error)


@cli.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path())
@click.option("--output", required=True, type=click.Path(), help="Directory for compare.md, compare.json, compare.png.")
def compare(reports, output) -> None:
    """Evaluations side by side: each figure's difference from the first report, with its 95% interval."""
    from .compare import CompareError
    from .compare import run as run_compare

    if len(reports) < 2:
        _fail(click.UsageError("give at least two report directories"))
    try:
        click.echo(run_compare(list(reports), output), nl=False)
    except CompareError as error:
        _fail(error)


@cli.command()
@click.option(
    "--model", "models", multiple=True, help="Model to measure (repeatable); default: embedded 270M and 1b-shaped."
)
@click.option(
    "--dtype",
    "dtypes",
    multiple=True,
    type=click.Choice([*CHOICES["dtype"], "4bit"]),
    help="Weight dtype (repeatable); default: auto (float32 on a CPU, bfloat16 on Metal).",
)
@option_from(BenchArgs, "repeats")
@option_from(BenchArgs, "prompt_tokens")
@option_from(BenchArgs, "new_tokens")
@option_from(BenchArgs, "train_length", help="Tokens per training sequence.")
@option_from(BenchArgs, "output", type=click.Path())
def bench(models, dtypes, repeats, prompt_tokens, new_tokens, train_length, output) -> None:
    """Prompt, decode and training tokens/s per model and dtype, against this machine's ceilings."""
    from .bench import run as run_bench

    arguments = BenchArgs(
        models=models,
        dtypes=dtypes or BenchArgs.dtypes,
        repeats=repeats,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        train_length=train_length,
        output=output,
        command="mlx_bluey " + " ".join(sys.argv[1:]),
    )
    try:
        click.echo(run_bench(arguments, log=lambda m: click.echo(m, err=True)), nl=False)
    except _user_errors() as error:
        _fail(error)


@cli.command()
@click.option("--adapter", required=True, type=click.Path(), help="Adapter directory from `mlx_bluey train`.")
@click.option("--model", help="Base model (default: the one the adapter was trained on).")
@click.option("--output", required=True, type=click.Path(), help="Directory for the fused Hugging Face model.")
def fuse(adapter, model, output) -> None:
    """Merge an adapter into its base weights (float32) as a Hugging Face model directory."""
    from .fuse import fuse as run_fuse

    try:
        run_fuse(adapter, output, model, log=click.echo)
    except _user_errors() as error:
        _fail(error)


@cli.command()
@click.argument("source", type=click.Path())
@option_from(
    ExportArgs,
    "kind",
    "--format",
    "kind",
    type=click.Choice(FORMATS),
    help="onnx: SOURCE is a fused model, exported for the browser; gguf: a fused model, as GGUF files for "
    "llama.cpp/Ollama/LM Studio (each with a Modelfile); peft: SOURCE is a LoRA adapter, written as a PEFT "
    "adapter for the Hugging Face base.",
)
@click.option("--output", required=True, type=click.Path(), help="Export directory.")
@click.option(
    "--variants",
    help="Comma-separated. onnx: "
    + ", ".join(ONNX_VARIANTS)
    + " (default "
    + ",".join(DEFAULT_VARIANTS["onnx"])
    + ", and int8-vocab with --vocabulary-data); gguf: f16, q8_0, Q4_K_M (default: all).",
)
@click.option("--parity-data", type=click.Path(), help="Held-out JSONL conversations for the parity report.")
@option_from(ExportArgs, "parity_texts", help="Conversations compared position by position.")
@option_from(ExportArgs, "greedy_prompts", help="Prompts decoded greedily by both.")
@option_from(ExportArgs, "greedy_tokens", help="New tokens per greedy prompt.")
@click.option(
    "--vocabulary-data",
    type=click.Path(),
    help="onnx: the character's training JSONL; the int8-vocab variant's output head keeps the token ids it uses.",
)
@option_from(ExportArgs, "vocabulary_common", help="int8-vocab also keeps every token id below this.")
@click.option("--keep-fp32", is_flag=True, help="Also keep the fp32 ONNX (onnx/model.onnx).")
def export(
    source,
    kind,
    output,
    variants,
    parity_data,
    parity_texts,
    greedy_prompts,
    greedy_tokens,
    vocabulary_data,
    vocabulary_common,
    keep_fp32,
) -> None:
    """Export a fused model to ONNX for the browser or GGUF (with a size and parity report), or an adapter to PEFT."""
    from .export import ExportError
    from .export import run as run_export

    arguments = ExportArgs(
        source=Path(source),
        output=Path(output),
        kind=kind,
        variants=tuple(variants.split(",")) if variants else (),
        parity_data=Path(parity_data) if parity_data else None,
        parity_texts=parity_texts,
        greedy_prompts=greedy_prompts,
        greedy_tokens=greedy_tokens,
        vocabulary_data=Path(vocabulary_data) if vocabulary_data else None,
        vocabulary_common=vocabulary_common,
        keep_fp32=keep_fp32,
        command=" ".join(["mlx_bluey", *sys.argv[1:]]),
    )
    try:
        run_export(arguments, log=click.echo)
    except ExportError as error:
        _fail(error)


@cli.command()
@click.argument("exports", nargs=-1, type=click.Path())
@click.option("--host", default=HOST, show_default=True, help="Address to listen on (localhost only by default).")
@click.option("--port", type=int, default=PORT, show_default=True)
@click.option("--api", is_flag=True, help="Serve an OpenAI-compatible /v1/chat/completions instead of the page.")
@click.option("--model", help="With --api: base model (registry name, HF id, directory; a fused model too).")
@click.option("--adapter", type=click.Path(), help="With --api: adapter directory from `mlx_bluey train`.")
@click.option("--name", help="With --api: the model id clients ask for (default: the adapter's or model's name).")
@click.option("--dtype", type=click.Choice(CHOICES["dtype"]), default=TrainConfig.dtype)
def serve(exports, host, port, api, model, adapter, name, dtype) -> None:
    """Serve the chat page with exported models (directories written by `mlx_bluey export`),
    or with --api an OpenAI-compatible endpoint for base + adapter or a fused model."""
    if api:
        if exports:
            _fail(click.UsageError("--api serves --model/--adapter, not export directories"))
        if model is None and adapter is None:
            _fail(click.UsageError("--api needs --model, --adapter or both"))
        from .serve_api import run_api

        try:
            run_api(model, adapter, name, host, port, dtype, log=click.echo)
        except (FileNotFoundError, ValueError) as error:
            _fail(error)
        return
    if model or adapter or name:
        _fail(click.UsageError("--model, --adapter and --name go with --api"))
    from .serve import ServeError
    from .serve import serve as run_serve

    try:
        run_serve([Path(e) for e in exports], host, port, log=click.echo)
    except ServeError as error:
        _fail(error)


@cli.group()
def data() -> None:
    """Dataset tools."""


@data.command("split")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--output", required=True, type=click.Path(), help="Directory for train/valid/test.jsonl.")
@click.option("--valid", type=float, default=VALID_SHARE, show_default=True, help="Share of conversations for valid.")
@click.option("--test", type=float, default=TEST_SHARE, show_default=True, help="Share of conversations for test.")
@click.option("--seed", type=int, default=SPLIT_SEED, show_default=True)
@click.option(
    "--keep",
    is_flag=True,
    help="Conversations already in OUTPUT's files stay in their split (new near-duplicates join them); only new "
    "ones are shuffled, by the same shares: added data leaves the held-out sets as they were.",
)
def data_split(inputs, output, valid, test, seed, keep) -> None:
    """Seeded train/valid/test split that keeps near-duplicates in one split."""

    from .data_split import write_split

    try:
        counts = write_split([Path(p) for p in inputs], Path(output), valid, test, seed, keep=keep)
    except _user_errors() as error:
        _fail(error)
    click.echo(", ".join(f"{name}: {n}" for name, n in counts.items()))


@data.command("pairs")
@click.argument("input_path", type=click.Path())
@click.option("--output", required=True, type=click.Path(), help="The pair JSONL to write (and OUTPUT.stats.json).")
@click.option("--adapter", type=click.Path(), help="The SFT adapter: its failing sampled replies become rejected.")
@click.option("--model", help="Base model (default: the adapter's base, else the embedded 270M).")
@click.option("--base/--no-base", "use_base", default=True, help="Also the untuned base model's replies.")
@click.option(
    "--character",
    "character_path",
    type=click.Path(),
    help="Card with markers, facts and assistant templates (default: character.yaml beside the input).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Conversation i samples with seed + i.")
@click.option(
    "--limit", type=int, help="Model replies for the first N conversations only (template and fact pairs: all)."
)
@option_from(GenerationSettings, "max_new_tokens")
@click.option(
    "--max-per-fact",
    type=click.IntRange(min=0),
    help="At most N fact-swap pairs per card fact (SimPO over-taught the most frequent: reports/compare-270m-simpo).",
)
@click.option(
    "--short-stays-short",
    is_flag=True,
    help=f"Also reject an adapter reply of {SHORT_WORDS}+ words where the dataset's is shorter (the evaluation's).",
)
def data_pairs(
    input_path,
    output,
    adapter,
    model,
    use_base,
    character_path,
    seed,
    limit,
    max_new_tokens,
    max_per_fact,
    short_stays_short,
) -> None:
    """Build a preference file (chosen: the dataset's reply; rejected: templates, swapped facts, base and
    adapter replies)."""
    from tqdm import tqdm

    from .character import CardError, card_beside, load_card
    from .data import read_jsonl
    from .data_pairs import SOURCES, build_pairs, progress_steps

    try:
        card = load_card(card_beside(input_path, character_path))
        total = progress_steps(len(read_jsonl(input_path)), limit, use_base, adapter)
        with tqdm(total=total, unit="reply", file=sys.stderr) as bar:
            stats = build_pairs(
                input_path,
                output,
                card,
                model=model,
                adapter=adapter,
                use_base=use_base,
                seed=seed,
                limit=limit,
                settings=GenerationSettings(max_new_tokens=max_new_tokens),
                progress=bar.update,
                log=lambda m: click.echo(m, err=True),
                max_per_fact=max_per_fact,
                short_stays_short=short_stays_short,
            )
    except (*_user_errors(), CardError) as error:
        _fail(error)
    counts = ", ".join(f"{s} {stats['by_source'][s]}" for s in SOURCES)
    click.echo(f"{stats['pairs']} pairs from {stats['conversations']} conversations ({counts}): {output}")


def _tokenizer(model):
    from transformers import AutoTokenizer

    from .models import resolve_model

    return AutoTokenizer.from_pretrained(str(resolve_model(model, log=lambda m: click.echo(m, err=True))))


@data.command("validate")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--model", help="Tokenizer to count tokens with (default: the embedded Gemma 3).")
@click.option(
    "--max-seq-length",
    type=int,
    default=TrainConfig.max_seq_length,
    show_default=True,
    help="Training limit in tokens.",
)
@click.option(
    "--against-eval",
    type=click.Path(),
    help="Evaluation prompts (data/eval/prompts.jsonl): a user turn that copies one, or the card's fact "
    "questions, or is a near-duplicate is a problem.",
)
@click.option(
    "--character",
    "character_path",
    type=click.Path(),
    help="Card whose fact questions --against-eval adds (default: character.yaml beside the first file).",
)
def data_validate(inputs, model, max_seq_length, against_eval, character_path) -> None:
    """Report every problem in chat JSONL files (exit 1 if any)."""

    from .character import CardError, card_beside, load_card
    from .data_validate import validate_files

    try:
        held_out = None
        if against_eval:
            from .evaluate import all_prompts

            held_out = all_prompts(against_eval, load_card(card_beside(inputs[0], character_path)))
        report = validate_files([Path(p) for p in inputs], _tokenizer(model), max_seq_length, held_out)
    except (*_user_errors(), CardError) as error:
        _fail(error)
    for problem in report.problems:
        click.echo(str(problem), err=True)
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    click.echo(f"{report.conversations} conversations in {len(inputs)} file(s): {verdict}")
    if not report.ok:
        sys.exit(1)


@data.command("stats")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--model", help="Tokenizer to count tokens with (default: the embedded Gemma 3).")
@click.option(
    "--character",
    "character_path",
    type=click.Path(),
    help="Card with voice markers (default: character.yaml beside the first file).",
)
@click.option("--png", type=click.Path(), help="Also write a words-per-reply histogram here.")
def data_stats(inputs, model, character_path, png) -> None:
    """Counts, lengths, voice markers and openings of chat JSONL files, as Markdown."""

    from .character import CardError
    from .data_stats import card_markers, compute_stats, to_markdown, write_histogram

    paths = [Path(p) for p in inputs]
    try:
        stats = compute_stats(paths, _tokenizer(model), card_markers(paths[0], character_path))
    except (*_user_errors(), CardError) as error:
        _fail(error)
    click.echo(to_markdown(stats), nl=False)
    if png:
        write_histogram(stats, Path(png))


def main() -> None:
    # We use transformers only for tokenizers; its "PyTorch was not found" advice is noise here.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    runtime.ensure_fast_blas()  # before anything imports mlx: it may re-exec with OpenBLAS
    runtime.tune_allocator()
    cli(prog_name="mlx_bluey")


if __name__ == "__main__":
    sys.exit(main())
