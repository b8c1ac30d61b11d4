"""llama.cpp through llama-cpp-python: the embedded default, 4-bit GGUF on a plain CPU.

Why this shape:

* The ``Llama`` object is created on first use and kept. Besides sparing the load, keeping it keeps
  its KV cache: ``Llama.generate`` compares the new prompt's tokens with the ones already evaluated
  and only evaluates the differing tail, so prompts that share a stable prefix (system prompt,
  in-context examples) pay for that prefix once per process. ``Completion.extra["prefill_tokens"]``
  shows how many prompt tokens were really evaluated, which is how tests and benchmarks see the reuse.
* The chat template is the GGUF's own (``tokenizer.chat_template`` metadata, rendered with Jinja by
  llama-cpp-python when no ``chat_format`` is forced), so a fine-tuned GGUF with another template just
  works.
* JSON output is constrained with a GBNF grammar generated from the JSON schema
  (``LlamaGrammar.from_json_schema``, the same converter ``response_format={"type": "json_object",
  "schema": ...}`` uses inside ``create_chat_completion``; about 1 ms for the ChatSum schema). A few
  recent grammars are kept, since map-reduce asks with the same schema several times.
* One lock serialises calls: a ``Llama`` context is not thread-safe, and the bot calls from worker threads.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from model.backends.base import BackendError, Completion, Turn

GRAMMAR_CACHE_SIZE = 32


def default_threads() -> int:
    """All CPUs this process may use; llama-cpp-python's own default (half) idles a small VM's cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class LlamaCppBackend:
    name = "llama_cpp"

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 8192,
        n_threads: int = 0,
        n_gpu_layers: int = 0,
        seed: int = 0,
        model_id: str | None = None,
        n_batch: int = 512,
    ) -> None:
        self.model_path = Path(model_path)
        self.model_id = model_id or self.model_path.stem
        self.context_length = n_ctx
        self.n_threads = n_threads or default_threads()
        self.n_gpu_layers = n_gpu_layers
        self.seed = seed
        self.n_batch = n_batch
        self._llm: Any = None
        self._grammars: dict[str, Any] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"LlamaCppBackend({str(self.model_path)!r}, n_ctx={self.context_length})"

    # -- loading ------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def _load(self) -> Any:
        with self._lock:
            if self._llm is not None:
                return self._llm
            try:
                from llama_cpp import Llama
            except ImportError as err:
                raise BackendError(
                    "the llama_cpp back-end needs llama-cpp-python: pip install 'chatsum[llama]' "
                    f"({err})"
                ) from None
            if not self.model_path.is_file():
                raise BackendError(f"model file not found: {self.model_path} (see `chatsum model list`)")
            try:
                self._llm = Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.context_length,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    n_batch=min(self.n_batch, self.context_length),
                    n_gpu_layers=self.n_gpu_layers,
                    seed=self.seed,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as err:
                raise BackendError(
                    f"llama.cpp could not load {self.model_path}: {err}. Is it a complete GGUF file? "
                    "For a built-in model run `chatsum model install NAME` again; if memory is short, "
                    "use a smaller model (qwen2.5-coder-0.5b) or a smaller model.llama_cpp.n_ctx."
                ) from None
            return self._llm

    def _grammar(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            from llama_cpp import LlamaGrammar

            try:
                grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception as err:  # the converter raises plain Exceptions for unsupported keywords
                raise BackendError(f"cannot turn the JSON schema into a llama.cpp grammar: {err}") from None
            if len(self._grammars) >= GRAMMAR_CACHE_SIZE:  # schemas vary per window (speakers, refs)
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    # -- Backend protocol ---------------------------------------------------------------------------------

    def complete(
        self,
        turns: list[Turn],
        *,
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Completion:
        with self._lock:
            llm = self._load()
            grammar = self._grammar(json_schema) if json_schema is not None else None
            messages = [{"role": t.role, "content": t.content} for t in turns]
            cached_before = int(llm.n_tokens)
            _perf_reset(llm)
            start = time.perf_counter()
            try:
                out = llm.create_chat_completion(
                    messages=messages,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    top_k=1 if temperature == 0 else 40,
                    seed=self.seed,
                    stop=stop or [],
                    grammar=grammar,
                )
            except ValueError as err:  # "Requested tokens (N) exceed context window of M"
                raise BackendError(
                    f"the prompt does not fit the model's context ({self.context_length} tokens, "
                    f"model.llama_cpp.n_ctx): {err}"
                ) from None
            seconds = time.perf_counter() - start
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        perf = _perf(llm)
        extra: dict[str, Any] = {"constrained": grammar is not None, "cached_tokens_before": cached_before}
        extra.update(perf)
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            seconds=seconds,
            extra=extra,
        )

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        llm = self._load()
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def _perf_reset(llm: Any) -> None:
    try:
        import llama_cpp

        llama_cpp.llama_perf_context_reset(llm.ctx)
    except Exception:  # timings are a nicety; never fail a completion over them
        pass


def _perf(llm: Any) -> dict[str, Any]:
    """Prefill/decode counts and rates from llama.cpp's own counters (prefill excludes cached tokens)."""
    try:
        import llama_cpp

        data = llama_cpp.llama_perf_context(llm.ctx)
        prefill_ms, prefill_n = float(data.t_p_eval_ms), int(data.n_p_eval)
        decode_ms, decode_n = float(data.t_eval_ms), int(data.n_eval)
    except Exception:
        return {}
    return {
        "prefill_tokens": prefill_n,
        "prefill_seconds": prefill_ms / 1000,
        "prefill_tokens_per_s": prefill_n / (prefill_ms / 1000) if prefill_ms > 0 else 0.0,
        "decode_tokens": decode_n,
        "decode_seconds": decode_ms / 1000,
        "decode_tokens_per_s": decode_n / (decode_ms / 1000) if decode_ms > 0 else 0.0,
    }
