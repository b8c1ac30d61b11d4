"""Record a back-end's completions once, replay them after: re-score validation changes without the model.

The quality and injection benches spend half an hour of CPU in the model; a change to grounding or to
the injection guard (``model.validate``) changes nothing the model is asked, only what is done with its
answers. ``RecordingBackend`` wraps the real back-end: a request seen before (same turns, budget,
grammar, schema, temperature, stop) is answered from the file, anything else goes to the model and is
appended. A run that replays is marked, and its timings are the recording's, not a measurement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from model.backends.base import Completion, CopyGuard, Turn


def _key(turns: Sequence[Turn], **options: Any) -> str:
    blob = json.dumps({"turns": [asdict(t) for t in turns], **options}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _guard_key(guard: CopyGuard | None) -> dict[str, Any]:
    """Nothing for an unguarded request, so recordings made before copy guards still replay."""
    if guard is None:
        return {}
    sources = hashlib.sha256("\n".join(guard.sources).encode("utf-8")).hexdigest()
    return {"guard": [guard.lines, guard.span, sources]}


class RecordingBackend:
    """The wrapped back-end, with its completions kept in a JSONL file (one ``{key, completion}`` a line)."""

    def __init__(self, inner: Any, path: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.context_length = inner.context_length
        self.path = path
        self.replayed = 0
        self.recorded = 0
        self._store: dict[str, Completion] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self._store[row["key"]] = Completion(**row["completion"])
        if hasattr(inner, "complete_many"):
            self.complete_many = self._complete_many

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def _keep(self, key: str, completion: Completion) -> None:
        self._store[key] = completion
        self.recorded += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "completion": asdict(completion)}, ensure_ascii=False) + "\n")

    def complete(self, turns: list[Turn], *, max_tokens: int, json_schema: dict[str, Any] | None = None,
                 temperature: float = 0.0, stop: list[str] | None = None,
                 grammar: str | None = None) -> Completion:
        key = _key(turns, max_tokens=max_tokens, json_schema=json_schema, temperature=temperature,
                   stop=stop, grammar=grammar)
        if key in self._store:
            self.replayed += 1
            return self._store[key]
        completion = self.inner.complete(turns, max_tokens=max_tokens, json_schema=json_schema,
                                         temperature=temperature, stop=stop, grammar=grammar)
        self._keep(key, completion)
        return completion

    def _complete_many(self, requests: Sequence[list[Turn]], *, max_tokens: int | Sequence[int],
                       grammars: Sequence[str | None] | None = None, temperature: float = 0.0,
                       guards: Sequence[CopyGuard | None] | None = None) -> list[Completion]:
        budgets = [max_tokens] * len(requests) if isinstance(max_tokens, int) else list(max_tokens)
        gs = list(grammars) if grammars is not None else [None] * len(requests)
        cs = list(guards) if guards is not None else [None] * len(requests)
        keys = [_key(t, many=True, max_tokens=n, grammar=g, temperature=temperature, **_guard_key(c))
                for t, n, g, c in zip(requests, budgets, gs, cs, strict=True)]
        if all(k in self._store for k in keys):
            self.replayed += len(keys)
            return [self._store[k] for k in keys]
        completions: list[Completion] = self.inner.complete_many(
            requests, max_tokens=budgets, grammars=gs, temperature=temperature, guards=cs)
        for k, c in zip(keys, completions, strict=True):
            self._keep(k, c)
        return completions
