"""Any OpenAI-compatible chat server (vLLM, llama.cpp server, Ollama, TGI) as a back-end.

This is how a deployment scales past one machine: run vLLM with tensor parallelism somewhere and
point ``[model.openai] base_url`` at it. Plain httpx rather than the ``openai`` SDK keeps the
dependency small and the wire format visible; only ``/chat/completions`` (and, when the server
offers it, ``/tokenize``) is used.

A summary that asks several questions at once (chatsum's topic questions, which share the chat and the
plan; the plain modes' candidates) can send them together (``complete_many``, ``parallel`` in flight).
That pays only where the server shares one prefix cache between requests (vLLM's automatic prefix
caching): a llama.cpp server keeps a cache per slot, and every other slot reads the whole chat again —
measured on 2 cores (bench/chatsum_server.py), chatsum took 80–101 s with the questions one after the
other and 117–123 s together. So the default is 1.

The API key comes from an environment variable only and is sent as a bearer header; it is never put
in an error message, a log line or ``repr``. Retries with exponential backoff cover what a busy
inference server does under load (429, 5xx, timeouts, refused connections); other 4xx errors are the
caller's fault and fail at once with the server's own explanation.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from model.backends.base import BackendError, Completion, CopyGuard, Turn, per_request, per_request_sampling
from model.tokens import estimate_tokens

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
DEFAULT_CONTEXT = 8192


class OpenAIBackend:
    """Chat completions over HTTP; JSON constrained server-side via ``response_format`` json_schema.

    vLLM (guided decoding), llama.cpp server and recent Ollama honour a json_schema
    ``response_format``. A server that rejects the field gets one retry without it, and the back-end
    remembers that, so the summarizer's validate-and-repair step does the rest.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "CHATSUM_OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 3,
        json_schema: bool = True,
        *,
        context_length: int = DEFAULT_CONTEXT,
        seed: int | None = None,
        backoff_s: float = 1.0,
        parallel: int = 1,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise BackendError(
                f"model.openai.base_url must start with http:// or https:// (got {base_url!r})"
            )
        self.base_url = base_url.rstrip("/")
        self.model_id = model or "default"
        self._model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.use_json_schema = json_schema
        self.context_length = context_length
        self.seed = seed
        self.backoff_s = backoff_s
        self.parallel = max(1, parallel)
        self._tokenize_url: str | bool | None = None  # None: not probed yet; False: server has none
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))

    def __repr__(self) -> str:  # no key here, ever
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model_id!r})"

    def close(self) -> None:
        self._client.close()

    # -- helpers ------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        """The key is read at call time so a rotated secret needs no restart; absent means no header."""
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _sleep_before_retry(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self.backoff_s * (2**attempt) * (0.75 + random.random() / 2)  # jitter spreads a herd
        if response is not None:
            retry_after = response.headers.get("Retry-After", "")
            with contextlib.suppress(ValueError):  # an HTTP date: keep our own backoff
                delay = max(delay, float(retry_after)) if retry_after else delay
        time.sleep(min(delay, MAX_BACKOFF_S))

    @staticmethod
    def _server_message(response: httpx.Response) -> str:
        try:
            body = response.json()
            err = body.get("error", body) if isinstance(body, dict) else body
            msg = err.get("message", err) if isinstance(err, dict) else err
            text = str(msg)
        except ValueError:
            text = response.text
        return " ".join(text.split())[:300]

    def _post(self, url: str, payload: dict[str, Any]) -> httpx.Response:
        """POST with retries; returns the first non-retryable response (2xx or a client error)."""
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            response: httpx.Response | None = None
            try:
                response = self._client.post(url, json=payload, headers=self._headers())
            except httpx.TimeoutException:
                last_problem = f"no reply within {self.timeout_s:g} s (model.openai.timeout_s)"
            except httpx.TransportError as err:
                last_problem = f"cannot reach {self.base_url}: {type(err).__name__}"
            else:
                if response.status_code not in RETRY_STATUS:
                    return response
                last_problem = f"HTTP {response.status_code}: {self._server_message(response)}"
            if attempt < self.max_retries:
                self._sleep_before_retry(attempt, response)
        tries = self.max_retries + 1
        raise BackendError(
            f"OpenAI-compatible server at {self.base_url} failed after {tries} attempt(s): {last_problem}"
        )

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
        payload: dict[str, Any] = {
            "messages": [{"role": t.role, "content": t.content} for t in turns],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": False,
        }
        if self._model:
            payload["model"] = self._model
        if stop:
            payload["stop"] = stop
        seed = self.seed if seed is None else seed
        if seed is not None:
            payload["seed"] = seed
        constrained = (json_schema is not None or grammar is not None) and self.use_json_schema
        if constrained and json_schema is not None:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "chatsum_output", "schema": json_schema, "strict": True},
            }
        elif constrained:
            # GBNF as the llama.cpp server reads it ("grammar"); a server that rejects it is asked again
            # without, and the answer is held to the format by validation alone.
            payload["grammar"] = grammar

        url = f"{self.base_url}/chat/completions"
        start = time.perf_counter()
        response = self._post(url, payload)
        if constrained and response.status_code in (400, 422) and _mentions_response_format(response):
            # The server cannot do schema-guided decoding; stop asking and fall back to validation.
            self.use_json_schema = False
            payload.pop("response_format", None)
            payload.pop("grammar", None)
            constrained = False
            response = self._post(url, payload)
        seconds = time.perf_counter() - start

        if response.status_code in (401, 403):
            hint = (
                f"set the API key in the environment variable {self.api_key_env}"
                if not self._headers().get("Authorization")
                else f"the key in {self.api_key_env} was refused"
            )
            raise BackendError(f"{self.base_url} answered HTTP {response.status_code}: {hint}")
        if response.status_code >= 400:
            raise BackendError(
                f"{self.base_url} refused the request (HTTP {response.status_code}): "
                f"{self._server_message(response)}"
            )
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendError(
                f"{self.base_url} sent a reply that is not an OpenAI chat completion: {response.text[:200]!r}"
            ) from None
        usage = body.get("usage") or {}
        finish = choice.get("finish_reason") or "stop"
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason="length" if finish == "length" else "stop",
            seconds=seconds,
            extra={"constrained": constrained, "server_model": body.get("model", ""), "finish": finish},
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
        """Several conversations, one request each, ``parallel`` of them in flight at a time.

        httpx's ``Client`` may be shared between threads. ``guards`` are not applied: the server picks
        the tokens. A request without a seed of its own gets none when the back-end has none (the
        server's own randomness). Every request runs to its end before the first failure is raised.
        """
        n = len(requests)
        budgets, gbnfs, _ = per_request(n, max_tokens, grammars, guards)
        temps, seeded = per_request_sampling(n, temperature, seeds, self.seed or 0)
        own = seeds is not None or self.seed is not None
        seed_list: list[int | None] = list(seeded) if own else [None] * n

        def one(i: int) -> Completion:
            turns = list(requests[i])
            return self.complete(
                turns, max_tokens=budgets[i], grammar=gbnfs[i], temperature=temps[i], seed=seed_list[i]
            )

        if n <= 1 or self.parallel == 1:
            return [one(i) for i in range(n)]
        with ThreadPoolExecutor(min(n, self.parallel), thread_name_prefix="chatsum-openai") as pool:
            futures = [pool.submit(one, i) for i in range(n)]
        return [f.result() for f in futures]

    def count_tokens(self, text: str) -> int:
        """Exact via the server's ``/tokenize`` (vLLM, llama.cpp server) when offered, else estimated.

        The probe happens once; servers without the endpoint (Ollama, TGI, hosted APIs) get the
        ``model.tokens`` estimate, which is close enough for window budgets with the usual margin.
        """
        if self._tokenize_url is False or not text:
            return estimate_tokens(text)
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        url = self._tokenize_url if isinstance(self._tokenize_url, str) else f"{root}/tokenize"
        payload: dict[str, Any] = {"prompt": text, "content": text, "add_special_tokens": False}
        if self._model:
            payload["model"] = self._model
        try:
            response = self._client.post(url, json=payload, headers=self._headers())
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            body = None
        if isinstance(body, dict) and ("count" in body or isinstance(body.get("tokens"), list)):
            self._tokenize_url = url
            return int(body.get("count", len(body.get("tokens") or [])))
        self._tokenize_url = False
        return estimate_tokens(text)


def _mentions_response_format(response: httpx.Response) -> bool:
    text = response.text.lower()
    return any(k in text for k in ("response_format", "json_schema", "guided", "grammar"))
