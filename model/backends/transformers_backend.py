"""Hugging Face transformers: any causal-LM directory (or GGUF file) plus an optional peft LoRA adapter.

This is the path for models fine-tuned with ``python -m finetune`` before they are exported to GGUF,
and for GPUs. Notes on the choices:

* Attention is ``sdpa`` (torch's scaled-dot-product attention, which picks a memory-efficient or flash
  kernel where one exists). transformers 5 has no xformers path, and SDPA covers the same ground.
* ``load_in_4bit`` quantizes linear layers to nf4 with bitsandbytes (double quantization, compute in
  bfloat16 on GPU / float32 on CPU). bitsandbytes >= 0.49 runs nf4 on CPU too, slowly.
* A GGUF file is dequantized by transformers into an ordinary torch model (it needs the ``gguf``
  package); that is slower to load than llama.cpp but lets a LoRA adapter trained on it be applied.
* Plain transformers has no JSON-schema constrained decoding. Generation is greedy and the schema is
  only recorded; ``model.summarizer`` validates the JSON and asks once for a repair, which is the
  safety net for this back-end (use llama_cpp or an OpenAI-compatible server with guided decoding
  where constrained output matters).
* A ``CopyGuard`` (chatsum's views) is applied by a logits processor (``_CopyGuardProcessor``) that
  passes over the best token while it would paste a message, as llama.cpp's decoding loop does.
  ``complete_many`` answers the requests one after the other: no shared-prefix batching here.
* A local directory is loaded with ``local_files_only`` so that an offline machine never waits on the
  hub; a hub id (``org/name``) is only fetched when the user configured one and has a network.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.backends.base import (
    MAX_PASSED_OVER,
    BackendError,
    Completion,
    CopyGuard,
    Turn,
    per_request,
    per_request_sampling,
)

DEFAULT_CONTEXT = 4096


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        path: str | Path,
        *,
        gguf_file: str | None = None,
        adapter: str | Path | None = None,
        load_in_4bit: bool = False,
        dtype: str = "auto",
        device: str = "auto",
        model_id: str | None = None,
        seed: int = 0,
        context_length: int | None = None,
    ) -> None:
        text = str(path).strip()
        if not text:
            raise BackendError(
                "model.transformers.path is empty: give a model directory, a .gguf file or a hub id"
            )
        p = Path(text).expanduser()
        if p.suffix.lower() == ".gguf" and not gguf_file:  # a GGUF file given directly
            p, gguf_file = p.parent, p.name
        self.local = p.exists()
        if not self.local and not _looks_like_hub_id(text):
            raise BackendError(f"model.transformers.path not found: {p} (nor is it a hub id like org/name)")
        if self.local and not p.is_dir():
            raise BackendError(f"model.transformers.path {p} is not a directory (or a .gguf file)")
        if gguf_file and self.local and not (p / gguf_file).is_file():
            raise BackendError(f"model.transformers.gguf_file not found: {p / gguf_file}")
        self.path = str(p) if self.local else text  # else a hub id, used as given
        self.gguf_file = gguf_file or None
        self.adapter = str(Path(adapter).expanduser()) if adapter else None
        if self.adapter and not Path(self.adapter).is_dir():
            raise BackendError(f"model.transformers.adapter is not a directory: {self.adapter}")
        self.load_in_4bit = load_in_4bit
        self.dtype_setting = dtype
        self.device_setting = device
        self.seed = seed
        base = model_id or (Path(self.gguf_file).stem if self.gguf_file else Path(self.path).name)
        self.model_id = f"{base}+{Path(self.adapter).name}" if self.adapter else base
        self.context_length = context_length or DEFAULT_CONTEXT
        self._context_known = context_length is not None
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"TransformersBackend({self.path!r}, gguf_file={self.gguf_file!r}, adapter={self.adapter!r})"

    # -- loading ------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _resolve_device_dtype(self, torch: Any) -> tuple[str, Any]:
        device = self.device_setting
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.dtype_setting != "auto":
            return device, getattr(torch, self.dtype_setting)
        if device.startswith("cuda"):
            return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return device, torch.float32  # CPUs without AMX run bf16 matmuls slower than fp32

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is not None:
                return self._model, self._tokenizer
            try:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer
            except ImportError as err:
                raise BackendError(
                    "the transformers back-end needs torch and transformers: "
                    f"pip install 'chatsum[train]' ({err})"
                ) from None
            device, dtype = self._resolve_device_dtype(torch)
            common: dict[str, Any] = {"local_files_only": self.local}
            if self.gguf_file:
                common["gguf_file"] = self.gguf_file
            kwargs: dict[str, Any] = {**common, "dtype": dtype, "attn_implementation": "sdpa"}
            if self.load_in_4bit:
                kwargs["quantization_config"] = _nf4_config(dtype)
                kwargs["device_map"] = {"": device}
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.path, **common)
                if self.load_in_4bit and self.gguf_file:
                    model: Any = _gguf_to_nf4(self.path, self.gguf_file, kwargs, torch, AutoModelForCausalLM)
                else:
                    model = AutoModelForCausalLM.from_pretrained(self.path, **kwargs)
            except ImportError as err:  # gguf / bitsandbytes / accelerate missing
                raise BackendError(f"cannot load {self.path}: a library is missing: {err}") from None
            except (OSError, ValueError, RuntimeError, KeyError) as err:
                where = f"{self.path}/{self.gguf_file}" if self.gguf_file else self.path
                raise BackendError(f"transformers could not load {where}: {_first_line(err)}") from None
            if not self.load_in_4bit:
                model.to(device)
            if self.adapter:
                model = self._with_adapter(model)
            model.eval()
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            if not self._context_known:
                n = getattr(model.config, "max_position_embeddings", None)
                self.context_length = int(n) if n else DEFAULT_CONTEXT
                self._context_known = True
            self._model, self._tokenizer, self._device = model, tokenizer, model.device
            return model, tokenizer

    def _with_adapter(self, model: Any) -> Any:
        assert self.adapter is not None
        try:
            from peft import PeftModel
        except ImportError as err:
            raise BackendError(f"a LoRA adapter needs peft: pip install 'chatsum[train]' ({err})") from None
        try:
            return PeftModel.from_pretrained(model, self.adapter, is_trainable=False)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise BackendError(
                f"cannot apply the LoRA adapter {self.adapter} to {self.model_id}: {_first_line(err)} "
                "(was it trained on this base model?)"
            ) from None

    # -- Backend protocol ---------------------------------------------------------------------------------

    def complete(
        self,
        turns: list[Turn],
        *,
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        grammar: str | None = None,
        guard: CopyGuard | None = None,
        seed: int | None = None,
    ) -> Completion:
        import torch

        with self._lock:
            model, tokenizer = self._load()
            messages = [{"role": t.role, "content": t.content} for t in turns]
            try:
                enc = tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
                )
            except (ValueError, TypeError) as err:  # e.g. no chat template in a base model
                raise BackendError(f"{self.model_id} cannot format a chat: {_first_line(err)}") from None
            input_ids = enc["input_ids"].to(self._device)
            attention_mask = enc["attention_mask"].to(self._device)
            n_prompt = int(input_ids.shape[1])
            if n_prompt + max_tokens > self.context_length:
                raise BackendError(
                    f"the prompt ({n_prompt} tokens) plus {max_tokens} new tokens exceeds the context of "
                    f"{self.model_id} ({self.context_length} tokens)"
                )
            gen: dict[str, Any] = {
                "max_new_tokens": max_tokens,
                "pad_token_id": tokenizer.pad_token_id,
                "attention_mask": attention_mask,
            }
            if temperature > 0:
                torch.manual_seed(self.seed if seed is None else seed)
                gen.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
            else:
                gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if stop:
                gen.update(stop_strings=stop, tokenizer=tokenizer)
            if guard is not None:
                from transformers import LogitsProcessorList

                guarding = _CopyGuardProcessor(guard, tokenizer, n_prompt)
                gen["logits_processor"] = LogitsProcessorList([guarding])
            start = time.perf_counter()
            with torch.inference_mode():
                output = model.generate(input_ids, **gen)
            seconds = time.perf_counter() - start
        new_tokens = output[0, n_prompt:].tolist()
        eos = _eos_ids(model, tokenizer)
        ended = bool(new_tokens) and new_tokens[-1] in eos
        text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        hit_stop = False
        for s in stop or []:
            if s in text:
                text, hit_stop = text.split(s, 1)[0], True
        finish = "stop" if ended or hit_stop or len(new_tokens) < max_tokens else "length"
        return Completion(
            text=text,
            prompt_tokens=n_prompt,
            completion_tokens=len(new_tokens),
            finish_reason=finish,
            seconds=seconds,
            extra={
                "constrained": False,
                "schema_requested": json_schema is not None or grammar is not None,
                "decode_tokens_per_s": len(new_tokens) / seconds if seconds > 0 else 0.0,
                "device": str(self._device),
                "load_in_4bit": self.load_in_4bit,
            },
        )

    def complete_many(
        self,
        requests: Sequence[list[Turn]],
        *,
        max_tokens: int | Sequence[int],
        grammars: Sequence[str | None] | None = None,
        temperature: float | Sequence[float] = 0.0,
        guards: Sequence[CopyGuard | None] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[Completion]:
        """The requests one after the other, each with its ``CopyGuard``; grammars are not enforced."""
        budgets, gbnfs, copy_guards = per_request(len(requests), max_tokens, grammars, guards)
        temps, seed_list = per_request_sampling(len(requests), temperature, seeds, self.seed)
        return [
            self.complete(list(t), max_tokens=b, grammar=g, temperature=tt, guard=c, seed=sd)
            for t, b, g, c, tt, sd in zip(
                requests, budgets, gbnfs, copy_guards, temps, seed_list, strict=True
            )
        ]

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        _, tokenizer = self._load()
        return len(tokenizer.encode(text, add_special_tokens=False))


class _CopyGuardProcessor:
    """A transformers logits processor for a ``CopyGuard``: while the first ``guard.lines`` lines are
    written, the best token is passed over (its score set to -inf) as long as it would paste a span of a
    message, up to ``MAX_PASSED_OVER`` times. Greedy decoding then takes the next best; sampling can
    still draw a lower-ranked copying token, which the guard does not chase."""

    def __init__(self, guard: CopyGuard, tokenizer: Any, n_prompt: int) -> None:
        self.guard, self._tokenizer, self._n_prompt = guard, tokenizer, n_prompt
        self._pieces: dict[int, str] = {}
        self._past: set[int] = set()  # rows past the guarded lines: not decoded again at every step

    def _piece(self, tok: int) -> str:
        piece = self._pieces.get(tok)
        if piece is None:
            piece = self._pieces[tok] = self._tokenizer.decode([tok], skip_special_tokens=True)
        return piece

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        for row in range(scores.shape[0]):
            if row in self._past:
                continue
            text = self._tokenizer.decode(input_ids[row, self._n_prompt :], skip_special_tokens=True)
            if text.count("\n") >= self.guard.lines:
                self._past.add(row)
                continue
            line = text.rsplit("\n", 1)[-1]
            for _ in range(MAX_PASSED_OVER):
                tok = int(scores[row].argmax())
                if not self.guard.copies(line, self._piece(tok)):
                    break
                scores[row, tok] = float("-inf")
        return scores


def _nf4_config(compute_dtype: Any) -> Any:
    try:
        import bitsandbytes  # noqa: F401  (imported for the clear error below)
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise BackendError(
            f"model.transformers.load_in_4bit needs bitsandbytes: pip install 'chatsum[gpu]' ({err})"
        ) from None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _gguf_to_nf4(path: str, gguf_file: str, kwargs: dict[str, Any], torch: Any, auto_cls: Any) -> Any:
    """transformers refuses a quantization_config together with gguf_file, so go through a checkpoint.

    The GGUF is dequantized to bfloat16 (nf4 keeps less precision than that anyway), saved as
    safetensors to a temporary directory, and reloaded with the bitsandbytes config; the fp copy is
    freed before the reload so peak memory stays near one bf16 model.
    """
    import tempfile

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its "packed weights are fastest in float32" advice does not apply here
    try:
        dense = auto_cls.from_pretrained(
            path, gguf_file=gguf_file, local_files_only=kwargs["local_files_only"], dtype=torch.bfloat16
        )
    finally:
        hf_logging.set_verbosity(level)
    dense.hf_quantizer = None  # the GGUF "quantization" marker would make save_pretrained refuse
    if hasattr(dense.config, "quantization_config"):
        del dense.config.quantization_config
    with tempfile.TemporaryDirectory(prefix="chatsum-nf4-") as tmp:
        dense.save_pretrained(tmp)
        del dense
        rest = {k: v for k, v in kwargs.items() if k not in ("gguf_file", "local_files_only")}
        return auto_cls.from_pretrained(tmp, local_files_only=True, **rest)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
