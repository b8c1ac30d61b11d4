"""From a trained adapter to something the bot serves, and the config line that switches it over.

Two ways to serve a run:

* **GGUF for llama.cpp** (the bot's default back-end): the adapter is merged into the base in fp32 and
  written as a Q8_0 GGUF. When the base came from a GGUF file (the built-in models) the base file's
  metadata and tokenizer are reused (``finetune.convert_gguf.export_gguf``), which needs nothing but
  the ``gguf`` package. For other bases llama.cpp's ``convert_hf_to_gguf.py`` is used if it can be
  found (``CHATSUM_LLAMA_CPP_CONVERT`` or on ``PATH``); it is not part of llama-cpp-python wheels, so
  without it the export says so and falls back to the next way. The switch is one line:
  ``model = "<file>.gguf"`` under ``[model.llama_cpp]``.
* **transformers with the adapter** (any base, GPUs, 4-bit): ``[model] backend = "transformers"`` with
  ``[model.transformers] path`` (the base) and ``adapter`` (the run's adapter directory).

``--merge`` also keeps the merged model as an HF directory (fp32 safetensors plus the tokenizer).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from finetune.convert_gguf import EXPORT_TYPES, export_gguf
from finetune.train import METADATA_FILE, TrainError, read_metadata

ENV_CONVERT = "CHATSUM_LLAMA_CPP_CONVERT"


class ExportError(RuntimeError):
    """The run cannot be exported; the message says why and what to do instead."""


def adapter_dir_of(path: Path) -> Path:
    """A run directory or its adapter directory -> the adapter directory."""
    if (path / METADATA_FILE).is_file():
        return path
    if (path / "adapter" / METADATA_FILE).is_file():
        return path / "adapter"
    raise ExportError(f"{path} is neither a run directory nor an adapter written by python -m finetune")


def merged_model(adapter_dir: Path, meta: dict[str, Any]) -> tuple[Any, Any]:
    """Base (fp32, CPU) + adapter, merged into a plain transformers model; and the tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = meta["base_model"]
    local = base.get("source") != "hub"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base["path"], dtype=torch.float32, local_files_only=local
        )
    except (OSError, ValueError) as err:
        raise ExportError(f"cannot load the base model {base['path']}: {str(err).splitlines()[0]}") from None
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    return model, tokenizer


def find_convert_script() -> Path | None:
    """llama.cpp's ``convert_hf_to_gguf.py``, if this machine has one."""
    env = os.environ.get(ENV_CONVERT)
    if env and Path(env).is_file():
        return Path(env)
    for name in ("convert_hf_to_gguf.py", "convert-hf-to-gguf.py"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def config_lines(gguf: Path | None, meta: dict[str, Any], adapter_dir: Path) -> str:
    """What to put in config.toml, as text a person can paste."""
    lines = []
    if gguf is not None:
        lines += [
            "To serve the fine-tuned model, set this one line in config.toml, section [model.llama_cpp]",
            "(the default back-end):",
            "",
            f'model = "{gguf.resolve()}"',
            "",
            "Or, with the transformers back-end and the adapter:",
        ]
    else:
        lines += ["To serve the fine-tuned model with the transformers back-end, set in config.toml:"]
    lines += [
        "",
        "[model]",
        'backend = "transformers"',
        "[model.transformers]",
        f'path = "{meta["base_model"]["path"]}"',
        f'adapter = "{adapter_dir.resolve()}"',
    ]
    if ((meta.get("recipe") or {}).get("recipe") or {}).get("serve_4bit"):
        lines.append("load_in_4bit = true  # the recipe serves in 4-bit nf4 (bitsandbytes)")
    return "\n".join(lines)


def export_run(
    run: Path,
    *,
    merge: bool = False,
    gguf: bool | None = None,
    gguf_type: str = "q8_0",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export a run: a GGUF when ``gguf`` (default: with ``merge``) and it can be written here, the
    merged HF directory with ``merge``; returns the paths, notes and the config instructions."""
    adapter = adapter_dir_of(run)
    run_dir = adapter.parent
    try:
        meta = read_metadata(adapter)
    except TrainError as err:
        raise ExportError(str(err)) from None
    result: dict[str, Any] = {"adapter": adapter, "merged": None, "gguf": None, "notes": []}
    want_gguf = merge if gguf is None else gguf
    base_gguf = meta["base_model"].get("gguf")
    base_gguf = base_gguf if base_gguf and Path(base_gguf).is_file() else None
    script = None if base_gguf else find_convert_script()
    if want_gguf and not (base_gguf or script):
        want_gguf = False  # merging a 7B model for nothing would take minutes and 30 GB of disk
        result["notes"].append(
            "no GGUF written: the base is not a GGUF file and llama.cpp's convert_hf_to_gguf.py is not "
            f"available offline here (set {ENV_CONVERT} to its path); serve the transformers back-end with "
            "the adapter instead"
        )
    if merge or want_gguf:
        log("merging the adapter into the base model (fp32)")
        model, tokenizer = merged_model(adapter, meta)
        merged_dir = run_dir / "merged"
        if merge or script is not None:  # the convert script reads a merged directory
            merged_dir.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(merged_dir, safe_serialization=True)
            tokenizer.save_pretrained(merged_dir)
            (merged_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
            result["merged"] = merged_dir
        target = run_dir / f"model-{gguf_type}.gguf"
        if want_gguf and base_gguf:
            log(f"writing {target.name} (metadata and tokenizer of {Path(base_gguf).name})")
            result["gguf"] = export_gguf(model, base_gguf, target, out_type=gguf_type)
        elif want_gguf and script is not None:
            log(f"converting with {script}")
            cmd = [
                sys.executable,
                str(script),
                str(merged_dir),
                "--outfile",
                str(target),
                "--outtype",
                gguf_type,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise ExportError(f"{script.name} failed: {tail[0]}")
            result["gguf"] = target
        del model
    result["instructions"] = config_lines(result["gguf"], meta, adapter)
    if result["notes"]:
        result["instructions"] = "\n".join(result["notes"]) + "\n\n" + result["instructions"]
    return result


def command(
    run: Annotated[Path, typer.Argument(help="Run directory (or its adapter directory).")],
    merge: Annotated[bool, typer.Option("--merge/--no-merge", help="Also keep the merged HF model.")] = False,
    gguf: Annotated[bool, typer.Option("--gguf/--no-gguf", help="Write a GGUF for llama.cpp.")] = True,
    gguf_type: Annotated[str, typer.Option("--gguf-type", help="q8_0 | f16 | f32")] = "q8_0",
) -> None:
    """Merge / export a trained adapter and print the config.toml line that serves it."""
    if gguf_type not in EXPORT_TYPES:
        raise typer.BadParameter(
            f"{gguf_type!r} is not one of {', '.join(EXPORT_TYPES)}", param_hint="--gguf-type"
        )
    result = export_run(
        run, merge=merge, gguf=gguf, gguf_type=gguf_type, log=lambda s: typer.echo(s, err=True)
    )
    for key in ("adapter", "merged", "gguf"):
        if result[key] is not None:
            typer.echo(f"{key}: {result[key]}")
    typer.echo("\n" + result["instructions"])
