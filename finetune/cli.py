"""``python -m finetune``: one Typer app, one module per subcommand.

Each subcommand lives in its own module and exposes a Typer-style function named ``command``; this
file only wires them up and turns errors into one readable ``error:`` line (set ``CHATSUM_DEBUG=1``
for the traceback). Heavy imports (torch, transformers, llama.cpp) stay inside the commands so that
``--help`` is instant.

Subcommands:

* ``eval``   – ``finetune.eval``: score a back-end on a JSONL dataset (ROUGE, BLEU, embeddings).
* ``data``   – ``finetune.data``: build instruction records.
* ``train``  – ``finetune.train``: LoRA + NEFTune training.
* ``export`` – ``finetune.export``: merge / GGUF export and the config line.
* ``convert-baichuan2`` – ``finetune.baichuan2``: Baichuan2-7B to the Llama layout.

To add one: write ``finetune/<name>.py`` with ``def command(...)`` and add it to ``SUBCOMMANDS``.
Bare ``python -m finetune`` (retrain on the collected chats, issue 5 item 0) is ``finetune.run``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import typer
from typer.core import TyperGroup

from bot.config import ConfigError

EXIT_ERROR = 1
EXIT_USAGE = 2
ENV_DEBUG = "CHATSUM_DEBUG"

#: subcommand name -> module that defines ``command``. Keep in the order shown by ``--help``.
SUBCOMMANDS: dict[str, str] = {
    "data": "finetune.data",
    "train": "finetune.train",
    "eval": "finetune.eval",
    "export": "finetune.export",
    "convert-baichuan2": "finetune.baichuan2",
}


class _FriendlyGroup(TyperGroup):
    """Errors a person can act on become one line and an exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except ConfigError as exc:
            _fail(str(exc), EXIT_USAGE)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:
            if os.environ.get(ENV_DEBUG):
                raise
            message = " ".join(str(exc).split())
            ours = type(exc).__module__.split(".")[0] in {"bot", "storage", "model", "finetune"}
            readable = isinstance(exc, LookupError | ValueError | OSError) and not isinstance(exc, KeyError)
            _fail(
                message if message and (ours or readable) else f"{type(exc).__name__}: {message}", EXIT_ERROR
            )


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


app = typer.Typer(
    cls=_FriendlyGroup,
    name="finetune",
    help="Build training data, fine-tune, evaluate and export chatsum's summarization model.",
    add_completion=False,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
)


# Bare ``python -m finetune`` (retrain on the collected chats) is ``finetune.run.root``.
app.callback()(importlib.import_module("finetune.run").root)

for _name, _module in SUBCOMMANDS.items():
    app.command(_name)(importlib.import_module(_module).command)


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="python -m finetune")
