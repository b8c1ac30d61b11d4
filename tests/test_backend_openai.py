"""The OpenAI-compatible back-end against a small local stand-in server (http.server on 127.0.0.1).

The stand-in records every request and answers from a script: canned completions, 5xx, 429 with
Retry-After, slow replies, and a 400 of a server that cannot do json_schema.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.config import parse_config
from model.backends import clear_backends, get_backend
from model.backends.base import Backend, BackendError, Turn
from model.backends.openai_backend import OpenAIBackend

SECRET = "sk-test-very-secret-0123456789"
SCHEMA = {"type": "object", "properties": {"overall": {"type": "string"}}, "required": ["overall"]}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def completion(text: str, finish: str = "stop", prompt: int = 42, done: int = 7) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done},
    }


class StandIn:
    """Scripted replies per path; what was asked is kept in ``requests``. ``answer``, when set, replies
    to each chat request's JSON instead of the script; ``most_in_flight`` is the most requests the
    server was handling at one time."""

    def __init__(self) -> None:
        self.script: dict[str, list[Reply]] = {}
        self.requests: list[dict[str, Any]] = []
        self.answer: Callable[[dict[str, Any]], Reply] | None = None
        self.in_flight = 0
        self.most_in_flight = 0
        lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                body = json.loads(raw or b"{}")
                with lock:
                    stand_in.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                    stand_in.in_flight += 1
                    stand_in.most_in_flight = max(stand_in.most_in_flight, stand_in.in_flight)
                try:
                    self._reply(body)
                finally:
                    with lock:
                        stand_in.in_flight -= 1

            def _reply(self, body: dict[str, Any]) -> None:
                if stand_in.answer is not None and self.path.endswith("/chat/completions"):
                    reply = stand_in.answer(body)
                else:
                    queue = stand_in.script.get(self.path) or [Reply(404, {"error": {"message": "no route"}})]
                    reply = queue.pop(0) if len(queue) > 1 else queue[0]
                time.sleep(reply.delay_s)
                data = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow reply, as intended

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def chat(self, *replies: Reply) -> None:
        self.script["/v1/chat/completions"] = list(replies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[StandIn]:
    s = StandIn()
    yield s
    s.close()


def backend(server: StandIn, **kw: Any) -> OpenAIBackend:
    kw.setdefault("backoff_s", 0.01)
    return OpenAIBackend(server.url, "served-model", **kw)


TURNS = [Turn("system", "You summarize chats."), Turn("user", "Ann: hi\nBob: hello")]


def test_request_shape_key_and_parsed_completion(server: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSUM_OPENAI_API_KEY", SECRET)
    server.chat(Reply(body=completion('{"overall": "Greetings."}')))
    b = backend(server, seed=3)
    assert isinstance(b, Backend)
    out = b.complete(TURNS, max_tokens=64, json_schema=SCHEMA, stop=["</s>"])

    assert out.text == '{"overall": "Greetings."}'
    assert (out.prompt_tokens, out.completion_tokens, out.finish_reason) == (42, 7, "stop")
    assert out.extra["constrained"] is True and out.seconds >= 0
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = req["json"]
    assert body["model"] == "served-model" and body["max_tokens"] == 64 and body["temperature"] == 0.0
    assert body["messages"] == [{"role": "system", "content": "You summarize chats."},
                                {"role": "user", "content": "Ann: hi\nBob: hello"}]
    assert body["stop"] == ["</s>"] and body["seed"] == 3
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert SECRET not in repr(b)


def test_no_key_no_header_and_schema_off_when_disabled(
    server: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHATSUM_OPENAI_API_KEY", raising=False)
    server.chat(Reply(body=completion("plain")))
    out = backend(server, json_schema=False).complete(TURNS, max_tokens=8, json_schema=SCHEMA)
    assert out.text == "plain" and out.extra["constrained"] is False
    req = server.requests[0]
    assert "Authorization" not in req["headers"] and "response_format" not in req["json"]


def test_5xx_and_429_are_retried_with_backoff(server: StandIn) -> None:
    server.chat(
        Reply(500, {"error": {"message": "engine overloaded"}}),
        Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0"}),
        Reply(body=completion("ok", finish="length")),
    )
    out = backend(server, max_retries=3).complete(TURNS, max_tokens=4)
    assert out.text == "ok" and out.finish_reason == "length"
    assert len(server.requests) == 3


def test_persistent_5xx_gives_a_clear_error_without_the_key(
    server: StandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CHATSUM_OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    server.chat(Reply(503, {"error": {"message": "model is loading"}}))
    with pytest.raises(BackendError) as exc:
        backend(server, max_retries=2).complete(TURNS, max_tokens=4)
    assert "after 3 attempt(s)" in str(exc.value) and "HTTP 503: model is loading" in str(exc.value)
    assert len(server.requests) == 3
    assert SECRET not in str(exc.value) and SECRET not in caplog.text


def test_slow_reply_times_out_then_recovers(server: StandIn) -> None:
    server.chat(Reply(body=completion("late"), delay_s=1.5), Reply(body=completion("on time")))
    out = backend(server, timeout_s=0.5, max_retries=1).complete(TURNS, max_tokens=4)
    assert out.text == "on time" and len(server.requests) == 2


def test_slow_server_exhausts_retries_with_a_timeout_message(server: StandIn) -> None:
    server.chat(Reply(body=completion("late"), delay_s=1.5))
    with pytest.raises(BackendError, match=r"no reply within 0\.3 s \(model\.openai\.timeout_s\)"):
        backend(server, timeout_s=0.3, max_retries=1).complete(TURNS, max_tokens=4)


def test_auth_failure_is_not_retried_and_names_the_env_var(
    server: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_KEY", SECRET)
    server.chat(Reply(401, {"error": {"message": f"bad key {SECRET[:6]}"}}))
    with pytest.raises(BackendError) as exc:
        backend(server, api_key_env="MY_KEY").complete(TURNS, max_tokens=4)
    assert "MY_KEY" in str(exc.value) and SECRET not in str(exc.value)
    assert len(server.requests) == 1


def test_other_client_errors_show_the_server_message(server: StandIn) -> None:
    server.chat(Reply(400, {"error": {"message": "max_tokens is too large: 99999"}}))
    with pytest.raises(BackendError, match=r"HTTP 400.*max_tokens is too large"):
        backend(server).complete(TURNS, max_tokens=99999)
    assert len(server.requests) == 1


def test_server_without_json_schema_support_falls_back_once(server: StandIn) -> None:
    server.chat(
        Reply(400, {"error": {"message": "response_format type json_schema is not supported"}}),
        Reply(body=completion('{"overall": "x"}')),
        Reply(body=completion('{"overall": "y"}')),
    )
    b = backend(server)
    first = b.complete(TURNS, max_tokens=8, json_schema=SCHEMA)
    second = b.complete(TURNS, max_tokens=8, json_schema=SCHEMA)
    assert (first.text, second.text) == ('{"overall": "x"}', '{"overall": "y"}')
    assert [("response_format" in r["json"]) for r in server.requests] == [True, False, False]
    assert first.extra["constrained"] is False


def test_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    b = OpenAIBackend("http://127.0.0.1:9/v1", "m", max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(BackendError, match=r"cannot reach http://127\.0\.0\.1:9/v1"):
        b.complete(TURNS, max_tokens=4)


def test_garbage_reply_is_a_backend_error(server: StandIn) -> None:
    server.chat(Reply(body={"unexpected": True}))
    with pytest.raises(BackendError, match="not an OpenAI chat completion"):
        backend(server).complete(TURNS, max_tokens=4)


def test_bad_base_url_is_refused_up_front() -> None:
    with pytest.raises(BackendError, match=r"model\.openai\.base_url"):
        OpenAIBackend("localhost:8000/v1", "m")


def test_count_tokens_uses_server_tokenizer_when_offered(server: StandIn) -> None:
    server.script["/tokenize"] = [Reply(body={"count": 5, "tokens": [1, 2, 3, 4, 5], "max_model_len": 4096})]
    b = backend(server)
    assert b.count_tokens("hello there world") == 5
    assert b.count_tokens("again") == 5
    assert [r["path"] for r in server.requests] == ["/tokenize", "/tokenize"]
    assert server.requests[0]["json"]["prompt"] == "hello there world"


def test_count_tokens_falls_back_to_estimate_and_stops_probing(server: StandIn) -> None:
    b = backend(server)  # no /tokenize route: the stand-in answers 404
    first = b.count_tokens("hello there, general Kenobi")
    assert 4 <= first <= 12
    b.count_tokens("again and again")
    assert len(server.requests) == 1
    assert b.count_tokens("") == 0


def test_registry_builds_the_configured_backend_once_per_process(
    server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATSUM_DATA_DIR", str(tmp_path))
    clear_backends()
    cfg = parse_config({"model": {"backend": "openai", "openai": {"base_url": server.url, "model": "m1"}}})
    first = get_backend(cfg)
    assert isinstance(first, OpenAIBackend) and first.model_id == "m1" and first.base_url == server.url
    assert first.parallel == 1  # one request at a time unless the config says the server shares its cache
    assert get_backend(cfg) is first
    other = parse_config(
        {"model": {"backend": "openai", "openai": {"base_url": server.url, "model": "m2", "parallel": 8}}}
    )
    assert get_backend(other) is not first and get_backend(other).parallel == 8  # type: ignore[attr-defined]
    clear_backends()
    assert get_backend(cfg) is not first
    clear_backends()


def _last_user(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def test_complete_many_has_every_request_in_flight_at_once(server: StandIn) -> None:
    """Each conversation is its own request, with its own options, and all are sent before any answer
    comes back: the stand-in holds every reply until three requests are open at the same time."""
    together = threading.Barrier(3, timeout=10)

    def answer(body: dict[str, Any]) -> Reply:
        together.wait()  # sent one after the other, the first would wait here alone and fail
        return Reply(body=completion(f"re: {_last_user(body)}"))

    server.answer = answer
    asks = [[Turn("user", f"question {i}")] for i in range(3)]
    out = backend(server, seed=None, parallel=8).complete_many(
        asks, max_tokens=[8, 16, 32], grammars=["root ::= [a-z]+", None, None], temperature=[0.0, 0.7, 0.7],
        seeds=[5, 6, 7],
    )
    assert [c.text for c in out] == ["re: question 0", "re: question 1", "re: question 2"]
    assert server.most_in_flight == 3
    sent = {_last_user(r["json"]): r["json"] for r in server.requests}
    assert [sent[f"question {i}"]["max_tokens"] for i in range(3)] == [8, 16, 32]
    assert [sent[f"question {i}"]["temperature"] for i in range(3)] == [0.0, 0.7, 0.7]
    assert [sent[f"question {i}"]["seed"] for i in range(3)] == [5, 6, 7]
    assert sent["question 0"]["grammar"] == "root ::= [a-z]+" and "grammar" not in sent["question 1"]


def test_complete_many_one_at_a_time_by_default_and_no_invented_seeds(server: StandIn) -> None:
    server.answer = lambda body: Reply(body=completion(f"re: {_last_user(body)}"), delay_s=0.05)
    out = backend(server).complete_many([[Turn("user", "a")], [Turn("user", "b")]], max_tokens=4)
    assert [c.text for c in out] == ["re: a", "re: b"] and server.most_in_flight == 1
    assert all("seed" not in r["json"] for r in server.requests)  # no seed configured, none given


def test_complete_many_raises_a_failure_once_every_request_ended(server: StandIn) -> None:
    def answer(body: dict[str, Any]) -> Reply:
        if _last_user(body) == "bad":
            return Reply(400, {"error": {"message": "max_tokens is too large"}})
        return Reply(body=completion("fine"), delay_s=0.2)

    server.answer = answer
    asks = [[Turn("user", "good 1")], [Turn("user", "bad")], [Turn("user", "good 2")]]
    with pytest.raises(BackendError, match="max_tokens is too large"):
        backend(server, parallel=3).complete_many(asks, max_tokens=4)
    assert sorted(_last_user(r["json"]) for r in server.requests) == ["bad", "good 1", "good 2"]


def test_chatsum_asks_its_topic_questions_together(server: StandIn) -> None:
    """The real summarizer over HTTP: the plan, then both topic questions in flight at the same time
    (a server batches them), and a summary grounded in the window."""
    from datetime import UTC, datetime, timedelta

    from model.schema import ChatMessage
    from model.summarizer import Summarizer

    t0 = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
    lines = [
        ("Ann", "lunch at noon tomorrow? the ramen place"),
        ("Bob", "noon works, ramen is good"),
        ("Cy", "who is coming to the lake on saturday?"),
        ("Bob", "lake saturday yes, I can drive us"),
        ("Cy", "great, I bring the kayak"),
    ]
    window = [
        ChatMessage(ref=i, speaker=who, text=text, sent_at=t0 + timedelta(minutes=i))
        for i, (who, text) in enumerate(lines, start=1)
    ]
    topics = threading.Barrier(2, timeout=10)
    answers = {
        "Step 2 for topic 1": "Ann: Suggests ramen at noon tomorrow.\nBob: Agrees to noon.\n"
        "Point: Lunch at noon. [1, 2]",
        "Step 2 for topic 2": "Cy: Asks who joins the lake trip.\nBob: Offers to drive.\n"
        "Point: Lake on Saturday. [3, 4]",
    }
    plan = "Lunch | Ann, Bob\nLake trip | Cy, Bob\nOverall: Lunch and a lake trip."

    def answer(body: dict[str, Any]) -> Reply:
        question = _last_user(body)
        for opening, text in answers.items():
            if question.startswith(opening):
                topics.wait()
                return Reply(body=completion(text))
        return Reply(body=completion(plan))

    server.answer = answer
    summary = Summarizer(backend(server, parallel=4), candidates=1).summarize(window, mode="chatsum")
    assert [t.title for t in summary.topics] == ["Lunch", "Lake trip"]
    assert [p.speaker for p in summary.topics[1].participants] == ["Cy", "Bob"]
    assert summary.topics[0].key_points[0].message_refs == [1, 2]
    chat_requests = [r for r in server.requests if r["path"].endswith("/chat/completions")]
    assert server.most_in_flight == 2 and len(chat_requests) == 3  # the plan, then both topics at once
