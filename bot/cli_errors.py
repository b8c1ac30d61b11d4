"""One way for every chatsum command line to fail: an ``error:`` line and an exit code, no traceback.

Shared by ``chatsum`` (``bot.cli``) and ``python -m finetune`` (``finetune.cli``) so that a person sees
the same kind of message from both; ``CHATSUM_DEBUG=1`` re-raises an unexpected error with its traceback.
"""

from __future__ import annotations

import os
from typing import Any

import typer
from sqlalchemy.exc import SQLAlchemyError
from typer.core import TyperGroup

from bot.config import ConfigError

EXIT_ERROR = 1
EXIT_CONFIG = 2  # also click's exit code for a usage error: "what you asked for cannot start"
ENV_DEBUG = "CHATSUM_DEBUG"
_OUR_PACKAGES = frozenset({"bot", "storage", "model", "finetune"})


def describe_error(exc: BaseException) -> str:
    """One line: our own errors and lookup/value/OS errors carry a readable message; others name a type."""
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        lines = str(orig if orig is not None else exc).strip().splitlines()
        return f"database error: {lines[0] if lines else type(exc).__name__}"
    message = " ".join(str(exc).split())
    ours = type(exc).__module__.split(".")[0] in _OUR_PACKAGES
    readable = isinstance(exc, LookupError | ValueError | OSError) and not isinstance(exc, KeyError)
    if message and (ours or readable):
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


class FriendlyGroup(TyperGroup):
    """Turns exceptions from any subcommand into one ``error:`` line and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer vendors click; its Context class is private
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exits, usage errors: typer reports them
            raise
        except ConfigError as exc:
            fail(str(exc), EXIT_CONFIG)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:
            if os.environ.get(ENV_DEBUG):
                raise
            fail(describe_error(exc), EXIT_ERROR)
