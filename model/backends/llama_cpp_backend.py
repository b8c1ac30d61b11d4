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
* A GBNF ``grammar`` (chatsum's line formats, ``model.prompts.plan_grammar``/``topic_grammar``) is
  decoded by our own greedy loop over llama.cpp's low-level API, which checks the grammar against the
  best token first and filters the whole vocabulary only when that token is refused (llama.cpp's own
  ``common_sampler`` does the same); llama-cpp-python's sampler chain filters all 151k Qwen tokens at
  every step, which measured ~17 ms a token on two loaded cores beside ~55 ms for the forward pass.
* ``complete_many`` answers several conversations that share a prefix *side by side*: the prefix is
  evaluated once as sequence 0, copied (in llama.cpp's unified KV cache a copy only tags cells) to one
  sequence per question, and every step decodes one token of each unfinished answer in one batch. On a
  CPU a decode step is bound by reading the weights, so a batch of four tokens costs little more than
  one: chatsum's topic questions (all after the same chat and plan) cost about the longest answer, not
  the sum. The context is created with ``MAX_PARALLEL`` sequences for this.
* A ``CopyGuard`` given to ``complete_many`` is applied in the same loop: a token that would extend a
  verbatim run of the chat in the guarded lines (chatsum's views) is passed over for the next best.
* The KV cache dies with the process, and every ``chatsum summarize`` is a new one: with a
  ``prefix_cache_dir``, the conversation up to the last ``Turn`` marked ``cache`` (the instructions and
  in-context examples) is evaluated once, stored on disk and read back by later processes
  (``model.backends.llama_prefix_cache``); ``Completion.extra["restored_prefix_tokens"]`` says how many.
* One lock serialises calls: a ``Llama`` context is not thread-safe, and the bot calls from worker threads.
* On a CPU with AMX (Intel Sapphire Rapids and later), a llama.cpp built there repacks the weights into
  its AMX buffer, and the first decode of a Q4_K_M model segfaults (ggml-org/llama.cpp#20824; seen on
  this project's 2-core Xeon VM, 2026-12-02). ``_load`` then loads without the extra buffer types
  (``use_extra_bufts = False``): plain CPU kernels (the 1.5B prefilled as fast there, and decoded at
  ~11 tok/s where other machines did 18–20), and no crash a user could only read as a dead process.
  ``model.llama_cpp.extra_buffers = "on"`` forces them back.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from model.backends.llama_prefix_cache import MIN_TOKENS, PrefixCache

GRAMMAR_CACHE_SIZE = 32
#: Most conversations ``complete_many`` decodes side by side (chatsum asks at most five topics at once).
MAX_PARALLEL = 8


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
        extra_buffers: str = "auto",
        prefix_cache_dir: str | Path | None = None,
        prefix_cache_mb: int = 512,
    ) -> None:
        self.model_path = Path(model_path)
        self.model_id = model_id or self.model_path.stem
        self.context_length = n_ctx
        self.n_threads = n_threads or default_threads()
        self.n_gpu_layers = n_gpu_layers
        self.seed = seed
        self.n_batch = n_batch
        if extra_buffers not in ("auto", "on", "off"):
            raise ValueError(f"extra_buffers must be auto, on or off, not {extra_buffers!r}")
        self.extra_buffers = extra_buffers
        self.prefix_cache = (
            PrefixCache(prefix_cache_dir, self.model_path, limit_mb=prefix_cache_mb)
            if prefix_cache_dir is not None and prefix_cache_mb > 0
            else None
        )
        #: Whether the loaded model uses llama.cpp's extra (repacking / AMX) buffer types.
        self.uses_extra_buffers: bool | None = None
        self._llm: Any = None
        self._grammars: dict[str, Any] = {}
        self._formatter: Any = None
        self._parallel = 1
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
                import llama_cpp  # noqa: F401  (only to say how to install it)
            except ImportError as err:
                raise BackendError(
                    f"the llama_cpp back-end needs llama-cpp-python: pip install 'chatsum[llama]' ({err})"
                ) from None
            if not self.model_path.is_file():
                raise BackendError(f"model file not found: {self.model_path} (see `chatsum model list`)")
            extra = want_extra_buffers(self.extra_buffers, system_info())
            try:
                self._llm = open_llama(
                    extra,
                    model_path=str(self.model_path),
                    n_ctx=self.context_length,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    n_batch=min(self.n_batch, self.context_length),
                    n_gpu_layers=self.n_gpu_layers,
                    seed=self.seed,
                    verbose=False,
                )
                self.uses_extra_buffers = extra
                self._formatter = _chat_formatter(self._llm)
                self._parallel = _allow_sequences(self._llm, MAX_PARALLEL) if self._formatter else 1
            except (ValueError, RuntimeError, OSError) as err:
                raise BackendError(
                    f"llama.cpp could not load {self.model_path}: {err}. Is it a complete GGUF file? "
                    "For a built-in model run `chatsum model install NAME` again; if memory is short, "
                    "use a smaller model (qwen2.5-coder-0.5b) or a smaller model.llama_cpp.n_ctx."
                ) from None
            return self._llm

    def _grammar(self, schema: dict[str, Any]) -> Any:
        def build() -> Any:
            from llama_cpp import LlamaGrammar

            try:
                return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception as err:  # the converter raises plain Exceptions for unsupported keywords
                raise BackendError(f"cannot turn the JSON schema into a llama.cpp grammar: {err}") from None

        return self._cached_grammar(json.dumps(schema, sort_keys=True), build)

    def _grammar_from_gbnf(self, gbnf: str) -> Any:
        def build() -> Any:
            from llama_cpp import LlamaGrammar

            try:
                return LlamaGrammar.from_string(gbnf, verbose=False)
            except Exception as err:
                raise BackendError(f"llama.cpp cannot parse the grammar: {err}") from None

        return self._cached_grammar(gbnf, build)

    def _cached_grammar(self, key: str, build: Callable[[], Any]) -> Any:
        """Compiling a grammar costs milliseconds; schemas and grammars vary per window (speakers, refs),
        so a small first-in-first-out cache keeps the recent ones."""
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = build()
            if len(self._grammars) >= GRAMMAR_CACHE_SIZE:
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
        grammar: str | None = None,
        seed: int | None = None,
    ) -> Completion:
        with self._lock:
            llm = self._load()
            constrained = grammar is not None or json_schema is not None
            if constrained and self._formatter is not None and temperature == 0 and not stop:
                gbnf = grammar if grammar is not None else self._grammar(json_schema or {})._grammar
                return self._generate([turns], [gbnf], [max_tokens])[0]
            if grammar is not None:
                grammar_obj = self._grammar_from_gbnf(grammar)
            else:
                grammar_obj = self._grammar(json_schema) if json_schema is not None else None
            messages = [{"role": t.role, "content": t.content} for t in turns]
            cached_before = int(llm.n_tokens)
            _perf_reset(llm)
            start = time.perf_counter()
            try:
                out = llm.create_chat_completion(
                    messages=messages,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    top_k=1 if temperature == 0 else TOP_K,
                    top_p=TOP_P,
                    min_p=MIN_P,
                    seed=self.seed if seed is None else seed,
                    stop=stop or [],
                    grammar=grammar_obj,
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
        extra: dict[str, Any] = {
            "constrained": grammar_obj is not None,
            "cached_tokens_before": cached_before,
        }
        extra.update(perf)
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            seconds=seconds,
            extra=extra,
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
        """Several conversations answered together, decoded side by side over their shared prefix.

        A request with a temperature above 0 samples (top-k, top-p and min-p as ``complete`` does) from
        its own seeded stream. With a chat template we cannot render ourselves the requests are answered
        one after the other by ``complete`` (and ``guards`` are not applied).
        """
        n = len(requests)
        budgets, gbnfs, copy_guards = per_request(n, max_tokens, grammars, guards)
        temps, seed_list = per_request_sampling(n, temperature, seeds, self.seed)
        with self._lock:
            self._load()
            if self._formatter is None or n == 0:
                return [
                    self.complete(list(t), max_tokens=b, grammar=g, temperature=tt, seed=sd)
                    for t, b, g, tt, sd in zip(requests, budgets, gbnfs, temps, seed_list, strict=True)
                ]
            out: list[Completion] = []
            for i in range(0, n, self._parallel):
                part = slice(i, i + self._parallel)
                sampling = list(zip(temps[part], seed_list[part], strict=True))
                out.extend(
                    self._generate(
                        list(requests[part]), gbnfs[part], budgets[part], copy_guards[part], sampling
                    )
                )
            return out

    # -- our decoding loop (grammar checked on the best token first; several sequences at once) ---------

    def _prompt_tokens(self, turns: Sequence[Turn]) -> list[int]:
        """The conversation as the GGUF's chat template renders it, tokenized like create_chat_completion."""
        llm = self._llm
        result = self._formatter(messages=[{"role": t.role, "content": t.content} for t in turns])
        tokens: list[int] = llm.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        return tokens

    def _generate(
        self,
        requests: Sequence[Sequence[Turn]],
        grammars: Sequence[str | None],
        budgets: Sequence[int],
        guards: Sequence[CopyGuard | None] | None = None,
        sampling: Sequence[tuple[float, int]] | None = None,
    ) -> list[Completion]:
        import llama_cpp
        import numpy as np

        llm = self._llm
        ctx = llm._ctx.ctx
        mem = llm._ctx.memory
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        n_vocab = int(llm.n_vocab())
        n = len(requests)
        guards = list(guards) if guards is not None else [None] * n
        draws = [
            _Draw(t, np.random.default_rng(sd)) if t > 0 else None for t, sd in (sampling or [(0.0, 0)] * n)
        ]
        prompts = [self._prompt_tokens(t) for t in requests]
        for p in prompts:
            if len(p) + 1 > self.context_length:
                raise BackendError(
                    f"the prompt does not fit the model's context ({self.context_length} tokens, "
                    f"model.llama_cpp.n_ctx): {len(p)} prompt tokens"
                )
        # The shared prefix, kept as sequence 0; each sequence needs one token of its own for its logits.
        common = min(len(p) for p in prompts) - 1
        for p in prompts[1:]:
            common = min(common, _common_prefix(prompts[0], p))
        # In the unified KV cache every sequence's own tokens take their own cells: when the prefix plus
        # all questions and answers would not fit the context, answer the requests in two halves.
        if n > 1 and common + sum(len(p) - common + b for p, b in zip(prompts, budgets, strict=True)) > (
            self.context_length
        ):
            half = n // 2
            both = list(sampling) if sampling is not None else None
            return self._generate(
                requests[:half], grammars[:half], budgets[:half], guards[:half], both and both[:half]
            ) + self._generate(
                requests[half:], grammars[half:], budgets[half:], guards[half:], both and both[half:]
            )
        have = llm.input_ids[: llm.n_tokens].tolist()
        reuse = min(_common_prefix(have, prompts[0]), common)
        cached_before = int(llm.n_tokens)
        start = time.perf_counter()  # a prefix read from disk counts as prefill time
        stored = self._stored_prefix(requests[0], prompts[0], common)
        restored = 0
        if stored > reuse and self.prefix_cache is not None:
            llama_cpp.llama_memory_seq_rm(mem, -1, -1, -1)
            llm.n_tokens = reuse = 0
            if self.prefix_cache.load(ctx, prompts[0][:stored]):
                llm.input_ids[:stored] = prompts[0][:stored]
                llm.n_tokens = reuse = restored = stored
        evaluated_from = reuse
        samplers = [_GrammarSampler(vocab, g) if g else None for g in grammars]
        lines = [_LineTracker(llm, g) if g is not None else None for g in guards]
        generated: list[list[int]] = [[] for _ in range(n)]
        finish = ["stop"] * n
        pos_next = [len(p) for p in prompts]
        prefill_tokens = steps = 0
        prefill_seconds = decode_seconds = 0.0
        done = False
        batch = llama_cpp.llama_batch_init(max(llm.n_batch, n), 0, max(n, 1))
        try:
            llm.n_tokens = reuse
            if stored > reuse and self.prefix_cache is not None:  # evaluated here once, then kept on disk
                llm.eval(prompts[0][reuse:stored])  # also drops everything past ``reuse``
                self.prefix_cache.save(ctx, prompts[0][:stored])
                reuse = stored
            if common > reuse:
                llm.eval(prompts[0][reuse:common])  # also drops everything past ``reuse``
            else:
                llm._ctx.kv_cache_seq_rm(-1, reuse, -1)
            for i in range(1, n):
                llama_cpp.llama_memory_seq_cp(mem, 0, i, -1, -1)
            # The questions' own tokens, in batches, with logits for each sequence's last token.
            entries = [
                (tok, pos, i) for i, p in enumerate(prompts) for pos, tok in enumerate(p) if pos >= common
            ]
            logits: dict[int, Any] = {}
            for b in range(0, len(entries), llm.n_batch):
                chunk = entries[b : b + llm.n_batch]
                wanted = {k for k, (_, pos, i) in enumerate(chunk) if pos == len(prompts[i]) - 1}
                _fill(batch, chunk, wanted)
                if llama_cpp.llama_decode(ctx, batch) != 0:
                    raise BackendError("llama.cpp could not evaluate the prompt (llama_decode failed)")
                for k in wanted:
                    logits[chunk[k][2]] = np.ctypeslib.as_array(
                        llama_cpp.llama_get_logits_ith(ctx, k), shape=(n_vocab,)
                    ).copy()
            prefill_seconds = time.perf_counter() - start
            prefill_tokens = common - evaluated_from + len(entries)
            active = list(range(n))
            decode_start = time.perf_counter()
            while active:
                feed: list[tuple[int, int, int]] = []
                for i in active:
                    tracker = lines[i]
                    banned = tracker.would_copy if tracker is not None and tracker.active else None
                    draw = draws[i]
                    tok = (
                        draw.pick(logits[i], samplers[i], banned)
                        if draw is not None
                        else _pick(logits[i], samplers[i], banned)
                    )
                    if llama_cpp.llama_vocab_is_eog(vocab, tok):
                        continue
                    generated[i].append(tok)
                    if tracker is not None:
                        tracker.add(tok)
                    if len(generated[i]) >= budgets[i] or pos_next[i] + 1 >= self.context_length:
                        finish[i] = "length"
                        continue
                    feed.append((tok, pos_next[i], i))
                    pos_next[i] += 1
                active = [i for _, _, i in feed]
                if not feed:
                    break
                _fill(batch, feed, set(range(len(feed))))
                if llama_cpp.llama_decode(ctx, batch) != 0:
                    raise BackendError("llama.cpp could not decode (llama_decode failed)")
                steps += 1
                for k, (_, _, i) in enumerate(feed):
                    logits[i] = np.ctypeslib.as_array(
                        llama_cpp.llama_get_logits_ith(ctx, k), shape=(n_vocab,)
                    )
            decode_seconds = time.perf_counter() - decode_start
            done = True
        finally:
            llama_cpp.llama_batch_free(batch)
            for smp in samplers:
                if smp is not None:
                    smp.close()
            # Sequence 0 stays as the cache for the next call: the shared prefix, and for a single
            # question its prompt and answer too (the next chatsum step extends that conversation).
            for i in range(1, n):
                llama_cpp.llama_memory_seq_rm(mem, i, -1, -1)
            kept = common if done else 0
            if done and n == 1:
                fed = (prompts[0][common:] + generated[0])[: pos_next[0] - common]
                llm.input_ids[common : common + len(fed)] = fed
                kept = common + len(fed)
            llama_cpp.llama_memory_seq_rm(mem, 0, kept, -1)
            llm.n_tokens = kept
        total_seconds = time.perf_counter() - start
        out: list[Completion] = []
        for i in range(n):
            text = llm.detokenize(generated[i]).decode("utf-8", errors="ignore")
            extra: dict[str, Any] = {"constrained": samplers[i] is not None, "parallel": n}
            if i == 0:  # the shared work is counted once, on the first answer
                extra.update(
                    cached_tokens_before=cached_before,
                    restored_prefix_tokens=restored,
                    prefill_tokens=prefill_tokens,
                    prefill_seconds=prefill_seconds,
                    prefill_tokens_per_s=prefill_tokens / prefill_seconds if prefill_seconds > 0 else 0.0,
                    decode_tokens=sum(len(g) for g in generated),
                    decode_seconds=decode_seconds,
                    decode_steps=steps,
                    decode_tokens_per_s=sum(len(g) for g in generated) / decode_seconds
                    if decode_seconds > 0
                    else 0.0,
                )
            out.append(
                Completion(
                    text=text,
                    prompt_tokens=len(prompts[i]),
                    completion_tokens=len(generated[i]),
                    finish_reason=finish[i],
                    seconds=total_seconds if i == 0 else 0.0,
                    extra=extra,
                )
            )
        return out

    def _stored_prefix(self, turns: Sequence[Turn], prompt: Sequence[int], common: int) -> int:
        """How many of ``prompt``'s tokens the last ``cache``-marked turn closes (0: none, or too few)."""
        if self.prefix_cache is None:
            return 0
        marked = [i for i, t in enumerate(turns) if t.cache]
        if not marked:
            return 0
        head = self._prompt_tokens(turns[: marked[-1] + 1])  # ends in a generation prompt: cut below
        n = min(_common_prefix(head, prompt), common)
        return n if n >= MIN_TOKENS else 0

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        llm = self._load()
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def system_info() -> str:
    """llama.cpp's build and CPU feature line ("AVX512 = 1 | AMX_INT8 = 1 | ...")."""
    import llama_cpp

    return bytes(llama_cpp.llama_print_system_info() or b"").decode("utf-8", "replace")


def want_extra_buffers(setting: str, info: str) -> bool:
    """Extra buffer types on, unless ``auto`` and this build would use AMX (see the module docstring)."""
    if setting != "auto":
        return setting == "on"
    return "AMX_INT8 = 1" not in info


#: ``extra_buffer_types`` swaps a module global: loads in different back-ends (each with its own lock)
#: must not interleave, or one would restore the other's swapped function for good.
_PARAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def _extra_buffer_types(enabled: bool) -> Any:
    """``Llama()`` has no argument for ``llama_model_params.use_extra_bufts``; it builds its params from
    ``llama_model_default_params()``, so that is wrapped while the model loads."""
    import llama_cpp.llama as llama_module

    with _PARAMS_LOCK:
        if enabled:
            yield
            return
        lib = llama_module.llama_cpp
        default = lib.llama_model_default_params

        def params() -> Any:
            p = default()
            p.use_extra_bufts = False
            return p

        lib.llama_model_default_params = params
        try:
            yield
        finally:
            lib.llama_model_default_params = default


def open_llama(extra_buffers: bool | None = None, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)``, with the extra buffer types only where they are safe: every
    ``Llama`` that decodes is opened here (``None``: decided by this build, as ``"auto"``)."""
    from llama_cpp import Llama

    if extra_buffers is None:
        extra_buffers = want_extra_buffers("auto", system_info())
    with _extra_buffer_types(extra_buffers):
        return Llama(**kwargs)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _chat_formatter(llm: Any) -> Any:
    """The GGUF's own chat template as llama-cpp-python renders it, or None (then ``complete_many`` and
    grammar decoding fall back to ``create_chat_completion``)."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template or llm.chat_format != "chat_template.default":
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
        stop_token_ids=[eos_id],
    )


def _allow_sequences(llm: Any, n_seq: int) -> int:
    """Re-create the context with room for ``n_seq`` sequences in one unified KV cache (same size as
    before: the sequences share the prefix's cells). Returns how many sequences the context holds."""
    from llama_cpp import _internals

    params = llm.context_params
    params.n_seq_max = n_seq
    params.kv_unified = True
    try:
        ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    except Exception:  # keep the one-sequence context that works
        params.n_seq_max = 1
        return 1
    old = llm._ctx
    llm._ctx = ctx
    llm._stack.enter_context(contextlib.closing(ctx))
    old.close()
    llm.n_tokens = 0
    return n_seq


def _fill(batch: Any, entries: Sequence[tuple[int, int, int]], wanted: set[int]) -> None:
    """Put ``(token, position, sequence)`` entries into a llama_batch, logits only for ``wanted`` ones."""
    for k, (tok, pos, seq) in enumerate(entries):
        batch.token[k] = tok
        batch.pos[k] = pos
        batch.n_seq_id[k] = 1
        batch.seq_id[k][0] = seq
        batch.logits[k] = k in wanted
    batch.n_tokens = len(entries)


class _GrammarSampler:
    """A llama.cpp grammar sampler for one sequence, with a one-candidate array for the cheap check."""

    def __init__(self, vocab: Any, gbnf: str) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.smpl = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not self.smpl:
            raise BackendError("llama.cpp cannot parse the grammar")
        self.one = (llama_cpp.llama_token_data * 1)()
        self.one_arr = llama_cpp.llama_token_data_array(data=self.one, size=1, selected=-1, sorted=False)
        self.full: Any = None

    def allows(self, tok: int, logit: float) -> bool:
        self.one[0].id = tok  # type: ignore[assignment]
        self.one[0].logit, self.one[0].p = logit, 0.0
        self.one_arr.size, self.one_arr.selected, self.one_arr.sorted = 1, -1, False
        self._lib.llama_sampler_apply(self.smpl, ctypes.byref(self.one_arr))
        return bool(self.one[0].logit != float("-inf"))

    def best_allowed(self, logits: Any) -> int:
        import numpy as np
        from llama_cpp import _internals

        if self.full is None:
            self.full = _internals.LlamaTokenDataArray(n_vocab=len(logits))
        self.full.copy_logits(logits)
        self._lib.llama_sampler_apply(self.smpl, ctypes.byref(self.full.candidates))
        data = self.full.candidates_data
        return int(data.id[int(np.argmax(data.logit[: self.full.candidates.size]))])

    def accept(self, tok: int) -> None:
        self._lib.llama_sampler_accept(self.smpl, tok)

    def close(self) -> None:
        if self.smpl:
            self._lib.llama_sampler_free(self.smpl)
            self.smpl = None


class _LineTracker:
    """The line being written by one sequence, for its ``CopyGuard``: which line it is, and its text."""

    def __init__(self, llm: Any, guard: CopyGuard) -> None:
        self._llm, self.guard = llm, guard
        self._pieces: dict[int, bytes] = {}
        self.line = bytearray()
        self.done_lines = 0

    @property
    def active(self) -> bool:
        return self.done_lines < self.guard.lines

    def _piece(self, tok: int) -> bytes:
        piece = self._pieces.get(tok)
        if piece is None:
            piece = self._pieces[tok] = bytes(self._llm.detokenize([tok]))
        return piece

    def would_copy(self, tok: int) -> bool:
        piece = self._piece(tok)
        if b"\n" in piece:
            return False  # ending the line copies nothing more
        line = self.line.decode("utf-8", errors="ignore")
        return self.guard.copies(line, piece.decode("utf-8", errors="ignore"))

    def add(self, tok: int) -> None:
        self.line += self._piece(tok)
        if b"\n" in self.line:
            self.done_lines += self.line.count(b"\n")
            self.line = bytearray(self.line.rsplit(b"\n", 1)[1])


def _pick(logits: Any, sampler: _GrammarSampler | None, banned: Callable[[int], bool] | None = None) -> int:
    """Greedy choice; under a grammar the best token if the grammar allows it, else the best it allows.

    A token that ``banned`` refuses (a copy guard's) is passed over for the next best, up to
    ``MAX_PASSED_OVER`` times; after that the copy is let through rather than the answer spoiled.
    """
    for _ in range(MAX_PASSED_OVER + 1):
        tok = int(logits.argmax())
        if sampler is not None and not sampler.allows(tok, float(logits[tok])):
            tok = sampler.best_allowed(logits)
        if banned is None or not banned(tok):
            break
        logits[tok] = float("-inf")
    if sampler is not None:
        sampler.accept(tok)
    return tok


#: Sampling as llama-cpp-python's ``create_chat_completion`` does by default (and ``complete`` here).
TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05


@dataclass(slots=True)
class _Draw:
    """One sampled sequence's temperature and random stream, for our decoding loop."""

    temperature: float
    rng: Any  # numpy.random.Generator

    def pick(self, logits: Any, sampler: _GrammarSampler | None, banned: Callable[[int], bool] | None) -> int:
        """A token drawn from the top ``TOP_K``, cut by ``MIN_P`` and ``TOP_P``, among those the grammar
        and the copy guard allow; the greedy choice when they allow none of them."""
        import numpy as np

        top = np.argpartition(logits, -TOP_K)[-TOP_K:]
        top = top[np.argsort(-logits[top])]
        keep = [
            int(t)
            for t in top
            if (sampler is None or sampler.allows(int(t), float(logits[t])))
            and not (banned is not None and banned(int(t)))
        ]
        if not keep:
            return _pick(logits, sampler, banned)
        z = np.asarray(logits[keep], dtype=np.float64) / self.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        cut = p >= MIN_P * p[0]
        cut &= np.concatenate(([True], np.cumsum(p)[:-1] < TOP_P))
        p = np.where(cut, p, 0.0)
        tok = keep[int(self.rng.choice(len(keep), p=p / p.sum()))]
        if sampler is not None:
            sampler.accept(tok)
        return tok


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
