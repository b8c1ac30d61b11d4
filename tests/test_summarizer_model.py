"""The summarizer with real models through the real llama.cpp back-end.

SmolLM2-135M is far too small to summarize well, which is the point: whatever it writes, the pipeline
must return a schema-valid, grounded ``Summary`` (or a clear ``SummaryError``) — refs inside the
window, speakers who were there, one entry per speaker per topic — and long windows must go through
map-reduce within the context. One end-to-end test runs the embedded 1.5B default when installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install 'chatsum[llama]'")

from model.backends.llama_cpp_backend import LlamaCppBackend
from model.prompts import PROMPT_VERSION, VIEW_VERBS, build_turns
from model.schema import ChatMessage, Summary
from model.summarizer import Summarizer, SummaryError
from model.weights import WeightsError, list_models, resolve_model

pytestmark = pytest.mark.slow
# One thread: on a shared 2-core machine llama.cpp's spinning threads make two threads slower than one.
THREADS = 1

OFFICE = [
    ("Nora", "the printer on floor 2 is jammed again"),
    ("Omar", "I'll call the vendor"),
    ("Pia", "can we get a new one instead? it's 8 years old"),
    ("Nora", "agree, it breaks every week"),
    ("Omar", "vendor comes tomorrow at 9, I'll ask about a replacement quote"),
    ("Pia", "also, who is bringing cake on Friday?"),
    ("Nora", "me! chocolate"),
    ("Omar", "🎂"),
]


def window(lines: list[tuple[str, str]], start: int = 1) -> list[ChatMessage]:
    return [ChatMessage(ref=start + i, speaker=s, text=t) for i, (s, t) in enumerate(lines)]


def assert_grounded(summary: Summary, messages: list[ChatMessage]) -> None:
    """The invariants every summary must hold, whatever the model wrote."""
    refs = {m.ref for m in messages}
    speakers = {m.speaker for m in messages}
    assert 1 <= len(summary.topics) <= 5
    for topic in summary.topics:
        assert topic.title.strip()
        names = [p.speaker for p in topic.participants]
        assert len(names) == len(set(names)), "one entry per speaker per topic"
        assert set(names) <= speakers
        for point in [*topic.key_points, *topic.decisions]:
            assert set(point.message_refs) <= refs
        for action in topic.action_items:
            assert set(action.message_refs) <= refs
            assert action.owner is None or action.owner in speakers


@pytest.fixture(scope="module")
def smol_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return resolve_model("smollm2-135m", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def smol(smol_path: Path) -> Iterator[LlamaCppBackend]:
    yield LlamaCppBackend(smol_path, n_ctx=4096, n_threads=THREADS, seed=0, model_id="smollm2-135m")


def test_chatsum_output_is_schema_valid_and_grounded(smol: LlamaCppBackend) -> None:
    messages = window(OFFICE)
    summary = Summarizer(smol, max_new_tokens=400).summarize(messages)
    assert_grounded(summary, messages)
    meta = summary.meta
    assert (meta.backend, meta.model_id, meta.prompt_version) == ("llama_cpp", "smollm2-135m", PROMPT_VERSION)
    assert meta.chunks == 1
    # The plan, then one question per planned topic (plus at most one repair each).
    assert 1 + len(summary.topics) <= meta.extra["calls"] <= 2 * (1 + 5)
    assert meta.prompt_tokens > 0 and meta.completion_tokens > 0
    # The topic questions re-use the prefix llama.cpp already holds: far fewer tokens evaluated than sent.
    assert 0 < meta.extra["prefill_tokens"] < meta.prompt_tokens
    assert meta.extra["cut_off"] is False
    # Under the grammar a view can only name a participant of its topic, and starts with a lead verb.
    assert meta.dropped_speakers == 0
    verbs = tuple(v + " " for v in VIEW_VERBS["en"])
    assert all(p.view.startswith(verbs) for t in summary.topics for p in t.participants)


def test_a_new_process_reads_the_chatsum_instructions_from_disk(smol_path: Path, tmp_path: Path) -> None:
    """``chatsum summarize`` is a new process each time: the second one starts from the stored prefix."""
    messages = window(OFFICE)

    def run() -> Summary:
        backend = LlamaCppBackend(
            smol_path, n_ctx=4096, n_threads=THREADS, seed=0, prefix_cache_dir=tmp_path / "prefix-cache"
        )
        return Summarizer(backend, max_new_tokens=400).summarize(messages)

    first, second = run(), run()
    assert first.meta.extra["restored_prefix_tokens"] == 0
    restored = second.meta.extra["restored_prefix_tokens"]
    assert restored > 256  # the system prompt and the worked example
    assert second.meta.extra["prefill_tokens"] == first.meta.extra["prefill_tokens"] - restored
    assert second.model_dump(exclude={"meta"}) == first.model_dump(exclude={"meta"})


def test_invented_refs_in_real_output_are_dropped_and_counted(smol: LlamaCppBackend) -> None:
    """Whatever refs the model writes, only refs into the window survive, and every drop is counted.

    Refs are plain integers under the grammar, so SmolLM2 can and usually does cite the in-context
    example's numbers (up to 14) in this 5-message chat; each must be dropped with its own detail line.
    """
    lines = [
        ("Ada", "can we push the design review to Thursday? mockups aren't ready"),
        ("Ben", "Thursday works"),
        ("Ada", "10am then"),
        ("Cy", "staging throws 502s again"),
        ("Ben", "rolling back the nginx change"),
    ]
    messages = window(lines)
    summary = Summarizer(smol, max_new_tokens=400).summarize(messages)
    assert_grounded(summary, messages)
    ref_drops = [d for d in summary.meta.extra.get("drop_details", []) if d.startswith("ref ")]
    assert len(ref_drops) == summary.meta.dropped_refs
    assert all(int(d.split()[1]) not in range(1, 6) for d in ref_drops)
    assert summary.meta.dropped_speakers == 0


def test_long_window_goes_through_map_reduce_within_a_small_context(smol_path: Path) -> None:
    backend = LlamaCppBackend(smol_path, n_ctx=2048, n_threads=THREADS, seed=0)
    lines = [
        (("Nora", "Omar", "Pia")[i % 3], f"note {i}: the printer vendor visit and the Friday cake plans")
        for i in range(120)
    ]
    messages = window(lines)
    summarizer = Summarizer(backend, max_new_tokens=200, few_shot=False)
    assert summarizer.count_turns(build_turns(messages, "chatsum", "en", few_shot=False)) > 2048
    try:
        summary = summarizer.summarize(messages)
    except SummaryError as err:  # allowed only with a clear reason, never a crash
        pytest.fail(f"map-reduce failed: {err}")
    assert summary.meta.chunks >= 2
    assert summary.meta.extra["calls"] >= 2 * summary.meta.chunks  # a plan and a topic per chunk at least
    assert summary.meta.extra.get("reduce") in ("model", "titles", "none")
    assert_grounded(summary, messages)
    # Topics were merged across chunks, not concatenated: never more than the cap.
    assert len(summary.topics) <= 5


def test_overall_mode_with_a_real_model(smol: LlamaCppBackend) -> None:
    summary = Summarizer(smol).summarize(window(OFFICE), mode="overall")
    assert summary.overall and summary.topics == []
    assert summary.meta.mode == "overall" and summary.meta.language == "en"


def test_overall_mode_keeps_the_consensus_of_sampled_answers(smol: LlamaCppBackend) -> None:
    """Three answers decoded side by side over one evaluated prompt; the summary is one of them."""
    one = Summarizer(smol).summarize(window(OFFICE), mode="overall")
    three = Summarizer(smol, candidates=3).summarize(window(OFFICE), mode="overall")
    assert three.overall and three.meta.extra["candidates"] == 3
    assert three.meta.extra["picked"][0] in (0, 1, 2)
    assert three.meta.prompt_tokens == one.meta.prompt_tokens  # the prompt counted once
    assert three.meta.extra["calls"] == 3 and three.meta.completion_tokens > one.meta.completion_tokens / 2


def test_summarize_command_prints_plain_text_unless_asked_for_markdown(
    smol_path: Path, tmp_path: Path
) -> None:
    """``chatsum summarize`` prints the summary the model gave, as plain text by default (a terminal shows
    Markdown's escapes as they are), as Markdown with ``--format md``."""
    from export_fixtures import tg_msg, write_telegram_chat
    from typer.testing import CliRunner

    from bot.cli import app
    from bot.render import render_markdown, render_plain_text

    chat = write_telegram_chat(
        tmp_path / "export",
        [tg_msg(i, text, sender=who, sender_id=f"u{ord(who[0])}") for i, (who, text) in enumerate(OFFICE, 1)],
        name="Office v1.2 (floor 2)",
    )
    cfg = tmp_path / "chatsum.toml"
    cfg.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[model]\nmax_new_tokens = 48\n'
        f'[model.llama_cpp]\nn_ctx = 4096\nn_threads = {THREADS}\nmodel = "{smol_path}"\n',
        encoding="utf-8",
    )
    outputs = {}
    for fmt in ("json", "text", "md"):
        res = CliRunner().invoke(
            app, ["--config", str(cfg), "summarize", str(chat), "--mode", "overall", "--format", fmt]
        )
        assert res.exit_code == 0, res.output
        outputs[fmt] = res.stdout
    summary = Summary.model_validate_json(outputs["json"][outputs["json"].index("{") :])
    title = "Office v1.2 (floor 2)"
    assert render_plain_text(summary, title=title) in outputs["text"]
    assert render_markdown(summary, title=title) in outputs["md"]
    assert title in outputs["text"] and title not in outputs["md"]  # Markdown escapes its "." and "("


# -- the embedded default ----------------------------------------------------------------------------


def _default_model() -> Path:
    from bot.config import Config

    data_dir = Config().data_dir
    status = next(s for s in list_models(data_dir) if s.name == "qwen2.5-coder-1.5b")
    if status.path is not None:
        return status.path
    if status.parts_installed < status.parts_total:
        pytest.skip(f"the embedded default is not installed: {status.install_hint}")
    try:
        return resolve_model("qwen2.5-coder-1.5b", data_dir)
    except WeightsError as err:
        pytest.skip(f"the embedded default could not be prepared: {err}")


@pytest.mark.default_model
def test_default_model_end_to_end() -> None:
    messages = window(
        [
            ("Priya", "can we move the design review to Thursday? the mockups aren't ready"),
            ("Tom", "Thursday works for me"),
            ("Lena", "I'm out Thursday afternoon, morning ok?"),
            ("Priya", "10am Thursday then"),
            ("Marco", "unrelated: staging returns 502 errors since the nginx change"),
            ("Lena", "my bad, rolling it back now"),
            ("Marco", "works again, thanks. can we add a config check to CI?"),
            ("Tom", "I'll open a ticket for that tomorrow"),
        ]
    )
    backend = LlamaCppBackend(_default_model(), n_ctx=4096, model_id="qwen2.5-coder-1.5b")
    summary = Summarizer(backend, max_new_tokens=600).summarize(messages)
    assert_grounded(summary, messages)
    assert 2 <= len(summary.topics) <= 3, json.dumps(summary.model_dump(mode="json"), ensure_ascii=False)
    assert summary.meta.extra["cut_off"] is False
    text = json.dumps(summary.model_dump(mode="json"), ensure_ascii=False).lower()
    assert "thursday" in text and ("502" in text or "staging" in text or "nginx" in text)
