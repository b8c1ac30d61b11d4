"""Evaluated prompt prefixes on disk, so a new llama.cpp process starts as warm as a running one.

Why: every ``chatsum summarize`` is a new process, and its first step re-reads the ~1,000-token
instructions and worked example before it reaches the chat: 10 s at 100 prefill tokens/s, 30 s on an
AVX2-only 2-core machine. Those tokens are the same for every window of a (mode, language), so their KV
state (llama.cpp's ``llama_state_seq_save_file``: the cells of one sequence plus its token ids; ~28 kB
a token for the 1.5B, ~12 kB for the 0.5B) is written once and read back in milliseconds.

* **What is stored** is chosen by the prompt builder, not guessed here: the conversation up to the last
  ``Turn`` marked ``cache`` (``model.prompts.build_turns`` marks the end of the in-context examples).
* **Keyed by content**: a SHA-256 of the model file's identity (resolved path, size, mtime), the
  llama-cpp-python version and the prefix's token ids. A new model file, a new llama.cpp or an edited
  prompt makes a new key; nothing stale is ever loaded.
* **Never a reason to fail**: a file that is missing, truncated or refused by llama.cpp is deleted and
  the prefix evaluated as usual; a disk that cannot be written only costs the saving. Files are written
  to a temporary name and renamed, so a killed process leaves no half file under a real key.
* **Bounded**: least recently used files are removed past ``limit_mb`` (``model.llama_cpp.prefix_cache_mb``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Prefixes shorter than this are cheaper to evaluate than to keep on disk.
MIN_TOKENS = 256
SUFFIX = ".kv"


class PrefixCache:
    """One directory of saved sequence states for one model file."""

    def __init__(self, directory: str | Path, model_path: str | Path, *, limit_mb: int) -> None:
        self.directory = Path(directory)
        self.limit_bytes = limit_mb * 1024 * 1024
        model = Path(model_path).resolve()
        try:
            st = model.stat()
            identity = f"{model}|{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            identity = str(model)
        try:
            from importlib.metadata import version

            identity += "|" + version("llama-cpp-python")
        except Exception:  # pragma: no cover - not installed as a distribution
            pass
        self._identity = identity.encode("utf-8")

    def path_for(self, tokens: Sequence[int]) -> Path:
        digest = hashlib.sha256(self._identity)
        digest.update(b"|".join(str(t).encode() for t in tokens))
        return self.directory / f"{digest.hexdigest()[:32]}{SUFFIX}"

    def load(self, ctx: Any, tokens: Sequence[int]) -> bool:
        """Put the saved state of ``tokens`` into sequence 0 of ``ctx`` (which must hold nothing);
        False when there is none or it does not load cleanly (then sequence 0 is left empty)."""
        import llama_cpp

        path = self.path_for(tokens)
        if not path.is_file():
            return False
        out = (llama_cpp.llama_token * len(tokens))()
        count = ctypes.c_size_t(0)
        read = llama_cpp.llama_state_seq_load_file(
            ctx, str(path).encode("utf-8"), 0, out, len(tokens), ctypes.byref(count)
        )
        if read == 0 or count.value != len(tokens) or list(out) != list(tokens):
            log.warning("stored prompt prefix %s did not load; it is evaluated again", path.name)
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), 0, -1, -1)
            with contextlib.suppress(OSError):
                path.unlink()
            return False
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently *used* goes first
        return True

    def save(self, ctx: Any, tokens: Sequence[int]) -> None:
        """Store sequence 0 of ``ctx``, which holds exactly ``tokens``; errors only cost the saving."""
        import llama_cpp

        path = self.path_for(tokens)
        if path.is_file():
            return
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            arr = (llama_cpp.llama_token * len(tokens))(*tokens)
            written = llama_cpp.llama_state_seq_save_file(ctx, str(tmp).encode("utf-8"), 0, arr, len(tokens))
            if written == 0:
                raise OSError("llama.cpp wrote nothing")
            os.replace(tmp, path)
        except OSError as err:
            log.warning("could not store the prompt prefix in %s: %s", self.directory, err)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self._prune()

    def _prune(self) -> None:
        try:
            files = sorted(
                (p.stat().st_mtime_ns, p.stat().st_size, p) for p in self.directory.glob(f"*{SUFFIX}")
            )
        except OSError:
            return
        total = sum(size for _, size, _ in files)
        for _, size, p in files[:-1]:  # the newest stays, even alone over the limit
            if total <= self.limit_bytes:
                break
            with contextlib.suppress(OSError):
                p.unlink()
                total -= size
