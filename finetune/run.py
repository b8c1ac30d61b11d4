"""Bare ``python -m finetune``: retrain the summarizer on the group's own chats, with sensible defaults.

What a group admin gets from one command, each step reported in plain words:

1. the chats in the configured database become training records (``finetune.data.records_from_chats``):
   human-corrected summaries where they exist, otherwise each conversation window labelled in
   ``chatsum`` mode by the teacher, which is the configured ``[model]`` back-end unless
   ``--teacher-backend`` names another (typically a large model behind an OpenAI-compatible server).
   Teacher answers are cached, so a rerun does not pay for them again. Opted-out users' messages are
   never read;
2. a deterministic train/validation split, written to ``<run>/data``;
3. LoRA + NEFTune training with the ``[finetune]`` settings (``finetune.train``);
4. a GGUF export when the base is a GGUF model, and a before/after comparison on the validation split;
5. the one config.toml line that switches the bot to the new model. Nothing in config.toml is changed:
   the admin reads the comparison first and decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

#: Below this many training records a run would mostly learn noise; say so instead of training.
MIN_TRAIN_RECORDS = 8


class NotEnoughData(ValueError):
    """Too few labelled windows to train on; the message says how many and what to do."""


def retrain(
    config: Any,
    *,
    teacher_backend: str | None = None,
    teacher_model: str | None = None,
    no_teacher: bool = False,
    out: Path | None = None,
    eval_limit: int = 20,
    val_fraction: float = 0.1,
    min_records: int = MIN_TRAIN_RECORDS,
    progress: bool = True,
    echo: Any = typer.echo,
) -> dict[str, Any]:
    """The whole pipeline on ``config``; returns the export result (paths and config instructions)."""
    from finetune.data import chat_records, finalize, write_dataset
    from finetune.train import TrainSettings, default_run_dir, finish_run, train

    settings = TrainSettings.from_config(config.finetune)
    run_dir = out or default_run_dir(config)
    echo(f"1/4 reading the chats in {config.database_url}")
    records = chat_records(config, None, teacher_backend, teacher_model, no_teacher, echo=echo)
    data = finalize(records, val_fraction=val_fraction, seed=settings.seed, max_tokens=settings.max_seq_len)
    c = data.counts
    echo(
        f"2/4 {c['read']} records: {c['duplicates']} duplicates and {c['too_long']} longer than "
        f"max_seq_len={settings.max_seq_len} left out; {c['train']} to train on, {c['validation']} to check"
    )
    if c["train"] < min_records:
        raise NotEnoughData(
            f"only {c['train']} training records (at least {min_records} are needed); let the bot collect "
            "more chats, configure a teacher back-end, or train on public data with "
            "`python -m finetune data` and `python -m finetune train`"
        )
    report = write_dataset(data, run_dir / "data")
    echo(
        f"3/4 training {settings.base_model} with LoRA r={settings.lora_r}, NEFTune alpha "
        f"{settings.neftune_noise_alpha:g}, into {run_dir}"
    )
    result = train(
        settings,
        data.train,
        data.validation,
        run_dir,
        cache_dir=config.data_dir,
        data_hash=report["sha256"],
        progress=progress,
        log=echo,
    )
    echo("4/4 exporting and comparing with the base model on the validation chats")
    return finish_run(
        result,
        data.validation,
        merge=False,
        gguf=True,
        eval_limit=eval_limit,
        embeddings=False,
        progress=progress,
        config=config,
        echo=echo,
    )


def root(
    ctx: typer.Context,
    config_path: Annotated[
        Path | None, typer.Option("--config", help="config.toml (bare command only; default ./config.toml).")
    ] = None,
    teacher_backend: Annotated[
        str | None,
        typer.Option("--teacher-backend", help="Labels windows: llama_cpp | transformers | openai."),
    ] = None,
    teacher_model: Annotated[str | None, typer.Option("--teacher-model", help="The teacher's model.")] = None,
    no_teacher: Annotated[
        bool, typer.Option("--no-teacher", help="Train on human-corrected summaries only.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run directory (default <data_dir>/runs/<time>).")
    ] = None,
    eval_limit: Annotated[int, typer.Option("--eval-limit", min=0, help="Validation chats compared.")] = 20,
) -> None:
    """Build training data, fine-tune, evaluate and export chatsum's summarization model.

    Without a subcommand: retrain on the chats collected in the configured database (corrected summaries
    and teacher-labelled windows), compare with the base model and print the config line to switch.
    """
    if ctx.invoked_subcommand is not None:
        return
    from bot.config import load_config

    retrain(
        load_config(config_path),
        teacher_backend=teacher_backend,
        teacher_model=teacher_model,
        no_teacher=no_teacher,
        out=out,
        eval_limit=eval_limit,
    )
