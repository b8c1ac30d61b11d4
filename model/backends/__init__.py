"""Model back-ends behind one small interface (see ``base.Backend``), chosen by ``[model] backend``.

``get_backend`` keeps one instance per process and configuration, because an instance holds a loaded
model (1-2 GB, plus llama.cpp's KV cache that makes stable prompt prefixes cheap) and every caller
(bot handlers, scheduler, CLI) should share it. Back-end modules are imported only when chosen, so
``import model.backends`` never pulls in torch or llama.cpp.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from model.backends.base import Backend, BackendError, Completion, Turn

if TYPE_CHECKING:
    from bot.config import Config
    from model.weights import ProgressFn

__all__ = ["Backend", "BackendError", "Completion", "Turn", "build_backend", "clear_backends", "get_backend"]

_cache: dict[str, Backend] = {}
_cache_lock = threading.Lock()


def _key(config: Config) -> str:
    section = getattr(config.model, config.model.backend)
    return json.dumps(
        {
            "backend": config.model.backend,
            "section": section.model_dump(mode="json"),
            "seed": config.model.seed,
            "data_dir": str(config.data_dir),
        },
        sort_keys=True,
    )


def build_backend(config: Config, *, progress: ProgressFn | None = None) -> Backend:
    """A new back-end for ``config`` (models load lazily on first use; built-in weights join here)."""
    from model.weights import BUILTIN_MODELS, resolve_model

    kind = config.model.backend
    if kind == "llama_cpp":
        from model.backends.llama_cpp_backend import LlamaCppBackend

        lc = config.model.llama_cpp
        return LlamaCppBackend(
            resolve_model(lc.model, config.data_dir, progress=progress),
            n_ctx=lc.n_ctx,
            n_threads=lc.n_threads,
            n_gpu_layers=lc.n_gpu_layers,
            seed=config.model.seed,
            extra_buffers=lc.extra_buffers,
            model_id=lc.model if lc.model in BUILTIN_MODELS else Path(lc.model).stem,
            prefix_cache_dir=Path(config.data_dir) / "prefix-cache",
            prefix_cache_mb=lc.prefix_cache_mb,
        )
    if kind == "transformers":
        from model.backends.transformers_backend import TransformersBackend

        tc = config.model.transformers
        path: str = tc.path
        gguf_file, model_id = tc.gguf_file or None, None
        if path in BUILTIN_MODELS:  # a built-in GGUF, dequantized by transformers
            resolved = resolve_model(path, config.data_dir, progress=progress)
            path, gguf_file, model_id = str(resolved.parent), resolved.name, tc.path
        return TransformersBackend(
            path,
            gguf_file=gguf_file,
            adapter=tc.adapter or None,
            load_in_4bit=tc.load_in_4bit,
            dtype=tc.dtype,
            device=tc.device,
            model_id=model_id,
            seed=config.model.seed,
        )
    if kind == "openai":
        from model.backends.openai_backend import OpenAIBackend

        oc = config.model.openai
        return OpenAIBackend(
            oc.base_url,
            oc.model,
            api_key_env=oc.api_key_env,
            timeout_s=oc.timeout_s,
            max_retries=oc.max_retries,
            json_schema=oc.json_schema,
            seed=config.model.seed,
            parallel=oc.parallel,
        )
    raise BackendError(f"model.backend: unknown back-end {kind!r} (llama_cpp, transformers, openai)")


def get_backend(config: Config, *, progress: ProgressFn | None = None) -> Backend:
    """The process-wide back-end for ``config``: built on first call, then shared."""
    key = _key(config)
    with _cache_lock:
        backend = _cache.get(key)
        if backend is None:
            backend = build_backend(config, progress=progress)
            _cache[key] = backend
        return backend


def clear_backends() -> None:
    """Forget cached back-ends (tests; a config reload). Models are freed when no one else holds them."""
    with _cache_lock:
        _cache.clear()
