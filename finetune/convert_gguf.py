"""GGUF <-> trainable Hugging Face model: the bridge between the offline weights and peft.

The offline models ship only as GGUF (``model.weights``). Training needs an ordinary torch model, and
transformers can dequantize a GGUF file into one (``from_pretrained(dir, gguf_file=...)``), but that
re-parses the file's 50k-entry vocabulary several times and takes from half a minute to several on a
busy 2-core machine. So the conversion is done **once** into ``<cache>/models/hf/<stem>-<key>/``
(fp32 safetensors, the tokenizer with its chat template, and a ``chatsum-source.json`` written last, so
a half-written directory is never mistaken for a finished one); every later run loads that directory
in a second or two.

The way back (``export_gguf``) writes a fine-tuned, merged model as a GGUF file that llama.cpp (and so
the bot's default back-end) serves. llama.cpp's own ``convert_hf_to_gguf.py`` is not installed with
llama-cpp-python wheels and cannot be fetched offline, but when the base model *came from* a GGUF file
it is not needed: a merged LoRA model has exactly the base's architecture, tensor shapes and tokenizer.
So the base file's metadata (architecture, tokenizer, chat template) is copied verbatim and only the
tensors are replaced, mapped back with the same name table transformers used to load them and with the
inverse of the one transformation it applied (the llama q/k head permutation).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.weights import BUILTIN_MODELS, sha256_file

MARKER = "chatsum-source.json"
#: GGUF tensor types the export can write (gguf-py quantizes these in numpy).
EXPORT_TYPES: tuple[str, ...] = ("q8_0", "f16", "f32")
#: llama.cpp ``general.file_type`` values (enum llama_ftype) for the export types.
_FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7}


class ConversionError(RuntimeError):
    """A model could not be converted; the message names the file and what went wrong."""


@dataclass(frozen=True)
class ConvertedModel:
    """A GGUF file's trainable twin: where it is and which exact file it came from."""

    path: Path  # the HF directory
    gguf: Path
    gguf_sha256: str
    architecture: str


def gguf_sha256(path: Path) -> str:
    """The file's sha256; a built-in model's pinned hash when the file is that built-in (already verified
    by ``model.weights`` when it was resolved, so hashing 1 GB again is skipped)."""
    size = path.stat().st_size
    for model in BUILTIN_MODELS.values():
        if path.name == model.filename and size == model.size:
            return model.sha256
    return sha256_file(path)


def _cache_key(path: Path) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def converted_dir(gguf: Path, cache_dir: str | Path) -> Path:
    """Where the HF twin of ``gguf`` lives (whether or not it exists yet)."""
    return Path(cache_dir).expanduser() / "models" / "hf" / f"{gguf.stem}-{_cache_key(gguf)}"


def read_marker(hf_dir: Path) -> dict[str, Any] | None:
    """The conversion record of a converted directory, or None for any other directory."""
    marker = hf_dir / MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def hf_from_gguf(gguf: str | Path, cache_dir: str | Path, *, log: Any = None) -> ConvertedModel:
    """The trainable HF directory for a GGUF file, converting it on first use (see the module docstring)."""
    src = Path(gguf).expanduser()
    if not src.is_file():
        raise ConversionError(f"GGUF file not found: {src}")
    target = converted_dir(src, cache_dir)
    marker = read_marker(target)
    if marker is not None:
        return ConvertedModel(target, src, str(marker["gguf_sha256"]), str(marker["architecture"]))

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if log:
        log(f"converting {src.name} to a trainable model once (cached in {target})")
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, KeyError, NotImplementedError) as err:
        raise ConversionError(f"transformers cannot load {src}: {str(err).splitlines()[0]}") from None
    # A model loaded from GGUF carries a GGUF "quantization" config that save_pretrained refuses; the
    # weights are already plain fp32 tensors, so dropping it is exact.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    sha = gguf_sha256(src)
    record = {
        "gguf": str(src),
        "gguf_name": src.name,
        "gguf_sha256": sha,
        "architecture": model.config.model_type,
        "converted_with": "transformers GGUF loader, fp32",
    }
    (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    del model
    try:
        tmp.rename(target)
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
        if read_marker(target) is None:
            raise
    return ConvertedModel(target, src, sha, record["architecture"])


# ----------------------------------------------------------------------------------------------- export


def _permute(weights: Any, n_head: int) -> Any:
    """llama.cpp's q/k row order (convert_hf_to_gguf ``LlamaModel.permute``): the inverse of the
    ``_reverse_permute_weights`` transformers applies when it reads a llama GGUF."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def export_gguf(model: Any, base_gguf: str | Path, out_path: str | Path, *, out_type: str = "q8_0") -> Path:
    """Write ``model`` (a merged, plain transformers model built on ``base_gguf``) as a GGUF file.

    Metadata is copied from ``base_gguf``; every tensor of the base file must have a counterpart in the
    model with the same shape, otherwise the model is not a fine-tune of that file and nothing is written.
    2-D weights are stored as ``out_type``; norms and biases as f32, as llama.cpp's converter does.
    """
    import gguf
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor, get_gguf_hf_weights_map

    if out_type not in EXPORT_TYPES:
        raise ConversionError(f"unknown GGUF type {out_type!r}; choose one of {', '.join(EXPORT_TYPES)}")
    base = Path(base_gguf)
    out = Path(out_path)
    reader = GGUFReader(str(base))
    arch = str(reader.fields["general.architecture"].contents())
    name_map = get_gguf_hf_weights_map(model, TensorProcessor())
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    n_head = int(model.config.num_attention_heads)
    n_kv = int(getattr(model.config, "num_key_value_heads", None) or n_head)

    writer = GGUFWriter(str(out) + ".tmp", arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # written by GGUFWriter itself
        if field.name == "general.file_type":
            continue
        value = field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    writer.add_file_type(_FILE_TYPE[out_type])
    qtype = {
        "q8_0": GGMLQuantizationType.Q8_0,
        "f16": GGMLQuantizationType.F16,
        "f32": GGMLQuantizationType.F32,
    }[out_type]

    for tensor in reader.tensors:
        hf_name = name_map.get(tensor.name)
        if hf_name is None or hf_name not in state:
            raise ConversionError(
                f"{base.name}: tensor {tensor.name!r} has no counterpart in the model; is the model a "
                "fine-tune of this file?"
            )
        data = state[hf_name]
        if arch == "llama" and tensor.name.endswith(("attn_q.weight", "attn_k.weight")):
            data = _permute(data, n_head if "attn_q" in tensor.name else n_kv)
        want = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # GGUF lists dims innermost-first
        if tuple(data.shape) != want:
            raise ConversionError(
                f"{base.name}: tensor {tensor.name!r} is {want} in the base file but {tuple(data.shape)} "
                f"in the model ({hf_name})"
            )
        if data.ndim == 1 or out_type == "f32":
            writer.add_tensor(tensor.name, data.astype(np.float32), raw_dtype=GGMLQuantizationType.F32)
        elif out_type == "f16":
            writer.add_tensor(tensor.name, data.astype(np.float16), raw_dtype=GGMLQuantizationType.F16)
        else:
            try:
                packed = gguf.quants.quantize(data.astype(np.float32), qtype)
            except gguf.quants.QuantError:  # a row length Q8_0 cannot block: keep it exact
                writer.add_tensor(tensor.name, data.astype(np.float16), raw_dtype=GGMLQuantizationType.F16)
                continue
            writer.add_tensor(tensor.name, packed, raw_shape=packed.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(str(out) + ".tmp", out)
    return out
