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

import typer

from bot.cli_errors import FriendlyGroup

#: subcommand name -> module that defines ``command``. Keep in the order shown by ``--help``.
SUBCOMMANDS: dict[str, str] = {
    "data": "finetune.data",
    "train": "finetune.train",
    "eval": "finetune.eval",
    "export": "finetune.export",
    "convert-baichuan2": "finetune.baichuan2",
}


app = typer.Typer(
    cls=FriendlyGroup,
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
