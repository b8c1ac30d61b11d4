"""The summarization pipeline: a window of messages in, a validated, grounded ``Summary`` out.

Design (measured on the embedded 1.5B, see ``bench/chatsum_latency.py`` and the README):

* **chatsum in two steps over one cached prefix.** Step 1 (the plan) lists the topics, one
  ``title | people`` line each, then an ``Overall:`` line; step 2 is asked once per topic and answers with
  exactly one ``Name: view`` line per person of that topic plus 1-2 ``Point:``/``Decided:`` lines with refs
  (and optional ``Todo Name:`` lines). Each step decodes under its own GBNF grammar
  (``model.prompts.plan_grammar`` / ``topic_grammar``): the plan can name only participants, and a topic's
  view lines are written by the grammar for exactly its people, each view opening with a reporting verb.
  Step 2 prompts extend step 1's conversation, so llama.cpp re-uses the evaluated chat and plan, and the
  topic questions go to the back-end together (``complete_many``: llama.cpp decodes them side by side;
  measured on two cores, four answers a step cost 156 ms where one costs 55 ms). Each topic question
  carries a copy guard (``model.prompts.view_guard``): its view lines may not paste four words of any
  message in a row (English; Chinese views are not guarded); llama.cpp applies it while decoding, other
  back-ends ignore it.
  Why not one call: measured on the 1.5B, one call over a 31-message, 3-subject chat produced five
  topics, each listing all four people with the same recycled views, 675 tokens; over a 200-message
  window it copied 14 of 14 views verbatim from messages. Two steps gave 3 topics for the 3 subjects,
  distinct views, none copied, 481 tokens (JSON then; the line format is ~25% fewer tokens).
* **The subjects the plan left out.** The 1.5B's plans often list the details of one subject as topics
  ("Seating plan", "Parking", "Wifi" of one office move) and leave others out. After step 2, the
  messages that no topic cites or best matches by words are found (``model.validate.uncovered``);
  when they are at least ``MISSED_MIN`` and ``MISSED_SHARE`` of the window, step 1 is asked again for
  those messages only, quoted after the chat (``model.prompts.build_missed_turns``: the chat stays the
  cached prefix), and step 2 describes what it adds. Then, past the window's cap (``topic_cap``; a
  long window's map-reduce keeps up to ``MAX_TOPICS``), the topics that together cover the most
  messages are kept (``most_covering``), so pieces of one subject give way to a subject of its own.
  Measured on the 43 bench chats (1.5B, ``bench/chatsum_quality.py``): planted topics found 74.2 % /
  75.9 % (quality / injection corpus) where the plan alone found 57.6 % / 66.7 %, the topic count as
  often right or more (81.8 % / 57.1 % against 81.8 % / 38.1 %), for one more call: 6-23 s on two
  cores, most on long windows (``meta.extra["missed_seconds"]``).
* **Validation, one repair, then ``SummaryError``.** A shape error goes back to the model with the
  conversation so far (a cached prefix, so the retry pays only for its answer). An answer cut off at
  the token limit is retried once asking for a shorter one; if that is cut off too, its complete topics
  are kept and ``meta.extra["cut_off"]`` says so.
* **Grounding** drops refs outside the window and speakers who are not participants, and counts them
  (``meta.dropped_refs`` / ``dropped_speakers``); near-duplicate topics are merged (``merged_topics``).
* **Long windows: map-reduce.** A window whose prompt would not fit ``context_length`` (minus the answer's
  budget) is cut into contiguous, balanced chunks; refs stay the window's own numbers, so a chunk's
  summary cites the window directly. *Map*: each chunk is summarized like a window. *Reduce*: the model
  is shown only the chunk topics' titles and gists, numbered, and asked which belong together plus an
  overall sentence (a short, constrained answer); the views, points and refs are then merged
  *deterministically* from the chunk results. The reduce step thus cannot invent refs, and costs a few
  seconds, not a second summarization. If it fails, a deterministic title-similarity merge is used
  (``meta.extra["reduce"]`` tells which). Plain-text modes reduce by summarizing the chunk summaries.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from model.backends.base import Backend, BackendError, Completion, CopyGuard, Turn
from model.consensus import consensus_index
from model.injection import InjectionGuard, addressed_to_bot
from model.language import resolve_language
from model.owners import own_by_commitment
from model.prompts import (
    MAX_TOPICS,
    MISSED_MAX_TOPICS,
    PROMPT_VERSION,
    TEXT_MODES,
    build_group_turns,
    build_merge_turns,
    build_missed_turns,
    build_repair_turns,
    build_topic_turns,
    build_turns,
    content_messages,
    extend_plan,
    format_dialogue,
    group_schema,
    missed_grammar,
    name_text,
    participants,
    plan_grammar,
    topic_grammar,
    view_guard,
)
from model.schema import MODES, ChatMessage, Summary, SummaryMeta, Topic
from model.validate import (
    Drops,
    OutputError,
    RawChatSum,
    RawPlan,
    RawTopic,
    copied_views,
    ground_topics,
    merge_similar_topics,
    merge_topics,
    most_covering,
    parse_groups,
    parse_plan,
    parse_topic_answer,
    salvage_cut_off,
    title_similarity,
    uncovered,
)


class SummaryError(Exception):
    """No usable summary could be made; the message says why (and is safe to show a chat admin)."""


#: Chat-template tokens a turn costs beyond its text (role markers); generous for Qwen/SmolLM2 templates.
TURN_OVERHEAD_TOKENS = 8
#: Plain-text modes answer in one to three sentences.
TEXT_MAX_TOKENS = 200
#: chatsum step 1 (up to 5 ``title | people`` lines + overall) and step 2 (per topic) answer budgets:
#: above the longest answer the grammar's caps allow in practice, so the token limit never cuts an
#: answer short (the budget is a ceiling; decoding stops where the grammar ends).
PLAN_MAX_TOKENS = 320
TOPIC_BASE_TOKENS = 240
TOKENS_PER_VIEW = 28
TOPIC_QUESTION_TOKENS = 64
#: The missed-subjects question (``Summarizer._missed_topics``) is asked when the plan's topics leave at
#: least this many of a window's messages uncovered (``model.validate.uncovered``), and this share of them.
#: Replayed over the bench's recorded answers (planted subjects found, quality / injection chats): a
#: fifth 75.8 % / 74.1 % (asked for 40 of 43 chats), a quarter 74.2 % / 75.9 %, a third 72.7 % / 75.9 %
#: with fewer topic counts right (47.6 % against 57.1 % on the injection chats). At a third the README's
#: example (19 of 66 messages uncovered) was not asked and its team offsite was missing.
MISSED_MIN = 4
MISSED_SHARE = 0.25
#: People per topic assumed when sizing chunks; a topic with more people gets more at call time.
TYPICAL_PEOPLE = 4


@dataclass
class _Usage:
    """Token and time counters summed over every model call behind one summary."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    #: Prompt tokens whose evaluated state a back-end read back instead of evaluating (llama.cpp, disk).
    restored_prefix_tokens: int = 0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    cut_off: bool = False
    failed_topics: int = 0
    #: Messages the plan's topics left uncovered, missed-subjects questions asked, topics they added.
    uncovered: int = 0
    missed_asked: int = 0
    added_topics: int = 0
    missed_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: Which drawn answer each plain-text call kept (0: the first, greedy one).
    picked: list[int] = field(default_factory=list)

    def add(self, c: Completion, *, same_prompt: bool = False) -> None:
        """Count one completion; ``same_prompt``: another answer to a prompt already counted."""
        self.calls += 1
        if not same_prompt:
            self.prompt_tokens += c.prompt_tokens
        self.completion_tokens += c.completion_tokens
        self.prefill_tokens += int(c.extra.get("prefill_tokens", 0))
        self.prefill_seconds += float(c.extra.get("prefill_seconds", 0.0))
        self.restored_prefix_tokens += int(c.extra.get("restored_prefix_tokens", 0))
        self.decode_tokens += int(c.extra.get("decode_tokens", 0))
        self.decode_seconds += float(c.extra.get("decode_seconds", 0.0))


class Summarizer:
    """Summaries of conversation windows with one back-end; cheap to build, the back-end loads lazily.

    ``language`` is ``"auto"`` (detected per window) or a code that forces the summary's language.
    ``few_shot=False`` leaves out the in-context examples (for a fine-tuned model). ``constrained=False``
    does not ask the back-end for schema-constrained decoding (a server without it); the answer is then
    held to the schema by validation alone. ``candidates`` above 1: the plain-text modes draw that many
    answers (the first at ``temperature``, the rest sampled at ``candidate_temperature``) and keep the one
    the others agree with most (``model.consensus``; the merge step of a long window stays greedy);
    ``chatsum`` is not affected. ``missed_topics=False`` skips the question for the subjects a chatsum
    plan left out (faster, fewer subjects found).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        language: str = "auto",
        max_new_tokens: int = 1024,
        few_shot: bool = True,
        temperature: float = 0.0,
        constrained: bool = True,
        candidates: int = 1,
        candidate_temperature: float = 0.7,
        missed_topics: bool = True,
    ) -> None:
        if max_new_tokens < 16:
            raise ValueError(f"max_new_tokens must be at least 16, got {max_new_tokens}")
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        if candidates > 1 and candidate_temperature <= 0:
            raise ValueError("candidate_temperature must be above 0 to draw more than one candidate")
        self.backend = backend
        self.language = language
        self.max_new_tokens = max_new_tokens
        self.few_shot = few_shot
        self.temperature = temperature
        self.constrained = constrained
        self.candidates = candidates
        self.candidate_temperature = candidate_temperature
        self.missed_topics = missed_topics

    # -- public ---------------------------------------------------------------------------------------

    def summarize(
        self, messages: Sequence[ChatMessage], mode: str = "chatsum", focus: str | None = None
    ) -> Summary:
        """Summarize one window. Raises ``SummaryError`` (with a reason) when no usable summary results."""
        start = time.perf_counter()
        messages = _check_window(messages)
        if mode not in MODES:
            raise SummaryError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode == "aspect" and not (focus and focus.strip()):
            raise SummaryError("mode 'aspect' needs a focus (what to summarize about)")
        language = resolve_language(self.language, (m.text for m in messages))
        usage = _Usage()
        drops = Drops()
        chunks = self._chunk(messages, mode, language, focus)
        guard = InjectionGuard(messages)
        meta_extra: dict[str, Any] = {}
        repaired = False
        merged = 0
        if mode == "chatsum":
            results = [self._chatsum_once(chunk, language, usage) for chunk in chunks]
            repaired = any(r.repaired for r in results)
            for r in results:
                drops.add(r.drops)
            if len(results) == 1:
                topics, overall = results[0].topics, results[0].overall
            else:
                topics, overall, how = self._reduce_chatsum(results, language, usage)
                meta_extra["reduce"] = how
            topics = own_by_commitment(topics, messages, drops)
            topics = guard.topics(topics, drops)
            topics, merged = merge_similar_topics(topics)
            # One window keeps as many topics as its plan may list; the added ones compete for those places.
            limit = MAX_TOPICS if len(chunks) > 1 else topic_cap(len(content_messages(messages)))
            if len(topics) > limit:
                meta_extra["dropped_topics"] = len(topics) - limit
                topics = [topics[i] for i in most_covering(topics, messages, limit)]
            if len(chunks) == 1 and (usage.added_topics or "dropped_topics" in meta_extra):
                # The plan's sentence names the plan's topics: with topics added or dropped it would
                # report what the summary no longer says (the README example's "roadmap meeting").
                overall = _titles_sentence(topics, language)
                meta_extra["overall_from_titles"] = True
            overall = guard.text(overall, drops, fallback=_titles_sentence(topics, language))
            summary = Summary(topics=topics, overall=overall)
        else:
            texts = [self._text_once(chunk, mode, language, focus, usage) for chunk in chunks]
            repaired = any(t[1] for t in texts)
            overall = (
                texts[0][0]
                if len(texts) == 1
                else self._reduce_text([t[0] for t in texts], mode, language, focus, usage)
            )
            overall = guard.text(overall, drops, fallback=_WITHHELD[language == "zh"])
            summary = Summary(topics=[], overall=overall)
        if mode == "chatsum":
            copied, total = copied_views(summary, messages)
            meta_extra["copied_views"] = copied
            meta_extra["views"] = total
        meta_extra.update(
            calls=usage.calls,
            prefill_tokens=usage.prefill_tokens,
            prefill_seconds=round(usage.prefill_seconds, 3),
            restored_prefix_tokens=usage.restored_prefix_tokens,
            decode_tokens=usage.decode_tokens,
            decode_seconds=round(usage.decode_seconds, 3),
            cut_off=usage.cut_off,
            failed_topics=usage.failed_topics,
            uncovered_messages=usage.uncovered,
            missed_asked=usage.missed_asked,
            added_topics=usage.added_topics,
            missed_seconds=round(usage.missed_seconds, 3),
            folded_views=drops.folded_views,
            recited_points=drops.recited,
            reassigned_owners=drops.owners,
            flagged_messages=len(guard.flagged),
            injected=drops.injected,
            unbacked_views=[{"topic": t, "speaker": sp} for t, sp in drops.unbacked_views],
        )
        if drops.details:
            meta_extra["drop_details"] = drops.details[:20]
        if usage.notes:
            meta_extra["notes"] = usage.notes
        if usage.picked:
            meta_extra["candidates"] = self.candidates
            meta_extra["picked"] = usage.picked
        summary.meta = SummaryMeta(
            model_id=getattr(self.backend, "model_id", ""),
            backend=getattr(self.backend, "name", ""),
            prompt_version=PROMPT_VERSION,
            mode=mode,
            language=language,
            focus=focus if mode == "aspect" else None,
            message_count=len(messages),
            chunks=len(chunks),
            repaired=repaired,
            dropped_refs=drops.refs,
            dropped_speakers=drops.speakers,
            merged_topics=merged,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            seconds=round(time.perf_counter() - start, 3),
            extra=meta_extra,
        )
        return summary

    # -- budgets and chunks ---------------------------------------------------------------------------

    def answer_budget(self, mode: str) -> int:
        """Context a prompt must leave free: for chatsum the plan, a topic question and its answer."""
        if mode == "chatsum":
            plan = min(self.max_new_tokens, PLAN_MAX_TOKENS)
            return plan + TOPIC_QUESTION_TOKENS + self._topic_tokens(TYPICAL_PEOPLE)
        return min(self.max_new_tokens, TEXT_MAX_TOKENS)

    def count_turns(self, turns: Sequence[Turn]) -> int:
        """Prompt size of a conversation under the back-end's tokenizer (text plus template overhead)."""
        return sum(self.backend.count_tokens(t.content) + TURN_OVERHEAD_TOKENS for t in turns)

    def _chunk(
        self, messages: Sequence[ChatMessage], mode: str, language: str, focus: str | None
    ) -> list[list[ChatMessage]]:
        """The window itself if its prompt fits; else contiguous chunks of balanced size that each fit."""
        budget = self.backend.context_length - self.answer_budget(mode) - 16
        turns = build_turns(messages, mode, language, focus, few_shot=self.few_shot)
        if self.count_turns(turns) <= budget:
            return [list(messages)]
        # Fixed cost: the prompt around a one-message chat, minus that message's line.
        one = build_turns(messages[:1], mode, language, focus, few_shot=self.few_shot)
        line_costs = [self.backend.count_tokens(_line(m, language, mode)) + 1 for m in messages]
        fixed = self.count_turns(one) - line_costs[0]
        room = budget - fixed
        if room < 64:
            raise SummaryError(
                f"the model's context ({self.backend.context_length} tokens) is too small for the "
                f"instructions plus any chat (needs about {fixed + 64 + self.answer_budget(mode)}); "
                "use a larger n_ctx or few_shot=False"
            )
        return balanced_chunks(messages, line_costs, room, shorten=lambda m, n: _shorten(m, n, language))

    # -- chatsum --------------------------------------------------------------------------------------

    def _complete(
        self,
        turns: list[Turn],
        usage: _Usage,
        *,
        max_tokens: int,
        schema: dict[str, Any] | None = None,
        grammar: str | None = None,
    ) -> Completion:
        try:
            completion = self.backend.complete(
                turns,
                max_tokens=max_tokens,
                json_schema=schema if self.constrained else None,
                grammar=grammar if self.constrained else None,
                temperature=self.temperature,
            )
        except BackendError as err:
            raise SummaryError(
                f"the {getattr(self.backend, 'name', 'model')} back-end failed: {err}"
            ) from err
        usage.add(completion)
        return completion

    def _complete_many(
        self, requests: list[tuple[list[Turn], str, int, CopyGuard | None]], usage: _Usage
    ) -> list[Completion]:
        """Several questions at once — ``(turns, grammar, max_tokens, guard)`` — where the back-end can
        batch them (``complete_many``: llama.cpp decodes the topics of a window side by side over their
        shared prefix, a few tokens a step for about the price of one, and applies the copy guards);
        else one after the other, unguarded."""
        many = getattr(self.backend, "complete_many", None)
        if many is None:
            return [self._complete(t, usage, max_tokens=n, grammar=g) for t, g, n, _ in requests]
        try:
            completions: list[Completion] = many(
                [t for t, _, _, _ in requests],
                max_tokens=[n for _, _, n, _ in requests],
                grammars=[g if self.constrained else None for _, g, _, _ in requests],
                temperature=self.temperature,
                guards=[c if self.constrained else None for _, _, _, c in requests],
            )
        except BackendError as err:
            raise SummaryError(
                f"the {getattr(self.backend, 'name', 'model')} back-end failed: {err}"
            ) from err
        for c in completions:
            usage.add(c)
        return completions

    def _draw(self, turns: list[Turn], usage: _Usage, *, max_tokens: int) -> list[Completion]:
        """``self.candidates`` answers to one prompt: the first at ``temperature`` (greedy by default), the
        others sampled, each from its own seed, side by side where the back-end batches them."""
        n = self.candidates
        temps = [self.temperature] + [self.candidate_temperature] * (n - 1)
        base = int(getattr(self.backend, "seed", 0) or 0)
        seeds = [base + i for i in range(n)]
        many = getattr(self.backend, "complete_many", None)
        try:
            if many is not None:
                completions: list[Completion] = many(
                    [turns] * n, max_tokens=max_tokens, temperature=temps, seeds=seeds
                )
            else:
                completions = [
                    self.backend.complete(turns, max_tokens=max_tokens, temperature=t, seed=sd)
                    for t, sd in zip(temps, seeds, strict=True)
                ]
        except BackendError as err:
            raise SummaryError(
                f"the {getattr(self.backend, 'name', 'model')} back-end failed: {err}"
            ) from err
        for i, c in enumerate(completions):
            usage.add(c, same_prompt=i > 0)
        return completions

    def _ask(
        self,
        turns: list[Turn],
        grammar: str,
        parse: Callable[[str], Any],
        language: str,
        usage: _Usage,
        *,
        max_tokens: int,
        what: str,
        shorter_grammar: str | None = None,
        salvage: bool = False,
        first: Completion | None = None,
    ) -> tuple[Any, str, bool]:
        """One constrained question with one repair: (parsed answer, its text, whether it was repaired).

        ``first`` is an answer already made (a batched one); only the repair, if needed, is asked here.
        """
        completion = first or self._complete(turns, usage, max_tokens=max_tokens, grammar=grammar)
        try:
            return parse(_uncut(completion)), completion.text, False
        except OutputError as err:
            cut = completion.finish_reason == "length"
            usage.notes.append(f"repair of the {what}: {err}")
            retry = build_repair_turns(turns, completion.text, str(err), language, shorter=cut)
            second = self._complete(
                retry, usage, max_tokens=max_tokens, grammar=(shorter_grammar or grammar) if cut else grammar
            )
            try:
                return parse(_uncut(second)), second.text, True
            except OutputError as err2:
                for attempt in (second, completion) if salvage else ():
                    closed = salvage_cut_off(attempt.text) if attempt.finish_reason == "length" else None
                    if closed is not None:
                        try:
                            answer = parse(closed)
                        except OutputError:
                            continue
                        usage.cut_off = True
                        return answer, closed, True
                raise SummaryError(
                    f"the model's {what} was unusable twice: first {err}; after repair {err2}"
                ) from None

    def _topic_tokens(self, n_people: int, turns: list[Turn] | None = None) -> int:
        """Answer budget of one topic: enough for its views and points, never past the context's end."""
        budget = min(self.max_new_tokens, TOPIC_BASE_TOKENS + TOKENS_PER_VIEW * n_people)
        if turns is not None:
            budget = min(budget, self.backend.context_length - self.count_turns(turns) - 8)
        return max(16, budget)

    def _chatsum_once(self, messages: list[ChatMessage], language: str, usage: _Usage) -> _ChunkResult:
        """Step 1 (the plan: topics and their people), then step 2 for every topic, on one cached prefix."""
        shown = content_messages(messages)
        speakers = participants(shown)
        cap = topic_cap(len(shown))
        plan_turns = build_turns(messages, "chatsum", language, few_shot=self.few_shot)
        plan, plan_answer, repaired = self._ask(
            plan_turns,
            plan_grammar(speakers, language, max_topics=cap),
            parse_plan,
            language,
            usage,
            max_tokens=min(self.max_new_tokens, PLAN_MAX_TOKENS),
            what="list of topics",
            shorter_grammar=plan_grammar(speakers, language, max_topics=min(cap, 3)),
            salvage=True,
        )
        planned = plan.topics[:MAX_TOPICS]
        drops = Drops()
        raw_topics, fixed = self._describe(
            plan_turns, plan_answer, planned, 1, messages, language, usage, drops
        )
        if not raw_topics:
            raise SummaryError(f"none of the {len(plan.topics)} topics could be described: {usage.notes[-1]}")
        topics, grounding = ground_topics(RawChatSum(overall=plan.overall, topics=raw_topics), messages)
        # Step 1, continued: the subjects the plan left out, when its topics leave many messages uncovered.
        # A message that talks to the bot is no subject, and quoted last it would be what the model reads
        # best: it stays out of the question (its topic, if any, is covered by the chat itself).
        missed = [m for m in uncovered(topics, shown) if not addressed_to_bot(m.text)]
        usage.uncovered += len(missed)
        if (
            self.missed_topics
            and missed
            and len(missed) >= max(MISSED_MIN, math.ceil(MISSED_SHARE * len(shown)))
        ):
            started = time.perf_counter()
            # Up to MISSED_MAX_TOPICS more: past the window's cap, the topics covering the most are kept.
            added = self._missed_topics(
                plan_turns, planned, missed, MISSED_MAX_TOPICS, speakers, language, usage
            )
            if added:
                extended = extend_plan(plan_answer, [(a.title, a.people) for a in added], language)
                try:
                    more, fixed_more = self._describe(
                        plan_turns, extended, added, len(planned) + 1, messages, language, usage, drops
                    )
                except SummaryError as err:  # the back-end failed: the planned topics stand
                    usage.notes.append(f"the added topics were left out: {err}")
                    more, fixed_more = [], False
                usage.added_topics += len(more)
                fixed = fixed or fixed_more
                if more:
                    raw_topics += more
                    topics, grounding = ground_topics(
                        RawChatSum(overall=plan.overall, topics=raw_topics), messages
                    )
            usage.missed_seconds += time.perf_counter() - started
        drops.add(grounding)
        return _ChunkResult(
            topics=topics,
            overall=whole_sentences(plan.overall),
            drops=drops,
            repaired=repaired or fixed,
        )

    def _describe(
        self,
        plan_turns: list[Turn],
        plan_answer: str,
        items: Sequence[RawPlan.Item],
        first_index: int,
        messages: Sequence[ChatMessage],
        language: str,
        usage: _Usage,
        drops: Drops,
    ) -> tuple[list[RawTopic], bool]:
        """Step 2 for the planned ``items`` (numbered from ``first_index``), asked together: their raw
        topics and whether any answer was repaired. A topic whose answer is unusable twice is left out
        (and noted); a planned person who is not a participant is dropped and counted in ``drops``."""
        shown = content_messages(messages)
        speakers = participants(shown)
        max_ref = max(m.ref for m in messages)
        known = {m.speaker for m in messages}
        by_label = {_name_label(s): s for s in known}
        asked: list[tuple[int, str, list[Turn], str, int, CopyGuard | None]] = []
        sources = tuple(m.text for m in messages)
        for index, item in enumerate(items, start=first_index):
            people: list[str] = []
            for p in item.people:
                name = p if p in known else by_label.get(p)
                if name is None:
                    drops.speakers += 1
                    drops.details.append(f"speaker {p!r} is not a participant")
                elif name not in people:
                    people.append(name)
            turns = build_topic_turns(plan_turns, plan_answer, index, item.title, people, language)
            grammar = topic_grammar(people, speakers, max_ref, language)
            guard = view_guard(sources, len(people), language)
            asked.append((index, item.title, turns, grammar, self._topic_tokens(len(people), turns), guard))
        firsts = self._complete_many([(t, g, n, c) for _, _, t, g, n, c in asked], usage)
        names = [*known, *by_label]
        raw_topics: list[RawTopic] = []
        repaired = False
        for (index, title, turns, grammar, budget, _), first in zip(asked, firsts, strict=True):
            try:
                answer, _, fixed = self._ask(
                    turns,
                    grammar,
                    lambda text: parse_topic_answer(text, names),
                    language,
                    usage,
                    max_tokens=budget,
                    what=f"topic {index}",
                    first=first,
                    salvage=True,  # a cut-off answer keeps its finished lines (views, points)
                )
            except SummaryError as err:
                usage.notes.append(f"topic {index} ({title}) left out: {err}")
                usage.failed_topics += 1
                continue
            repaired = repaired or fixed
            raw_topics.append(
                RawTopic(
                    title=title,
                    views=[v.model_copy(update={"name": by_label.get(v.name, v.name)}) for v in answer.views],
                    points=answer.points,
                    decisions=answer.decisions,
                    actions=[
                        a.model_copy(update={"owner": by_label.get(a.owner, a.owner)}) if a.owner else a
                        for a in answer.actions
                    ],
                )
            )
        return raw_topics, repaired

    def _missed_topics(
        self,
        plan_turns: list[Turn],
        planned: Sequence[RawPlan.Item],
        missed: Sequence[ChatMessage],
        room: int,
        speakers: Sequence[str],
        language: str,
        usage: _Usage,
    ) -> list[RawPlan.Item]:
        """Ask which subjects the ``missed`` messages discuss: at most ``room`` topics not already planned.
        An unusable answer or a failed call adds none (and is noted): the plan's topics stand either way."""
        turns = build_missed_turns(plan_turns, missed, language, most=room)
        usage.missed_asked += 1
        try:
            completion = self._complete(
                turns,
                usage,
                max_tokens=min(self.max_new_tokens, PLAN_MAX_TOKENS),
                grammar=missed_grammar(speakers, language, max_topics=room),
            )
            plan = parse_plan(completion.text)
        except (SummaryError, OutputError) as err:
            usage.notes.append(f"the missed-subjects question added nothing: {err}")
            return []
        titles = [t.title for t in planned]
        new = [t for t in plan.topics if max((title_similarity(t.title, u) for u in titles), default=0) < 0.7]
        return new[:room]

    def _reduce_chatsum(
        self, results: Sequence[_ChunkResult], language: str, usage: _Usage
    ) -> tuple[list[Topic], str, str]:
        """Merge chunk topics across chunks: the model groups them, the contents merge deterministically."""
        items: list[tuple[int, Topic]] = [(i + 1, t) for i, r in enumerate(results) for t in r.topics]
        fallback_overall = " ".join(r.overall for r in results if r.overall)
        if len(items) <= 1:
            return [t for _, t in items], fallback_overall, "none"
        part_topics = [(part, t.title, _gist(t)) for part, t in items]
        turns = build_group_turns(part_topics, language)
        try:
            completion = self._complete(
                turns,
                usage,
                max_tokens=min(self.max_new_tokens, 400),
                schema=group_schema(len(items), language),
            )
            groups = parse_groups(completion.text)
        except (OutputError, SummaryError) as err:
            usage.notes.append(f"reduce fell back to title similarity: {err}")
            topics, _ = merge_similar_topics([t for _, t in items], threshold=0.6)
            return topics, fallback_overall, "titles"
        used: set[int] = set()
        merged: list[Topic] = []
        for g in groups.topics:
            ids = [i for i in dict.fromkeys(g.ids) if 1 <= i <= len(items) and i not in used]
            if not ids:
                continue
            used.update(ids)
            merged.append(merge_topics([items[i - 1][1] for i in ids], title=" ".join(g.title.split())))
        # A part-topic the model forgot is kept, not lost.
        merged.extend(items[i - 1][1] for i in range(1, len(items) + 1) if i not in used)
        overall = " ".join(groups.overall.split()) or fallback_overall
        return merged, overall, "model"

    # -- plain-text modes -----------------------------------------------------------------------------

    def _text_once(
        self, messages: list[ChatMessage], mode: str, language: str, focus: str | None, usage: _Usage
    ) -> tuple[str, bool]:
        turns = build_turns(messages, mode, language, focus, few_shot=self.few_shot)
        if self.candidates > 1:
            answers = [
                clean_text_answer(c.text, cut_off=c.finish_reason == "length")
                for c in self._draw(turns, usage, max_tokens=self.answer_budget(mode))
            ]
            usable = [a for a in answers if a]
            if usable:
                pick = consensus_index(usable)
                usage.picked.append(answers.index(usable[pick]))
                return usable[pick], False
            completion = Completion(text="")
        else:
            completion = self._complete(turns, usage, max_tokens=self.answer_budget(mode), schema=None)
        text = clean_text_answer(completion.text, cut_off=completion.finish_reason == "length")
        if text:
            return text, False
        retry = build_repair_turns(turns, completion.text, "empty", language, json_answer=False)
        second = self._complete(retry, usage, max_tokens=self.answer_budget(mode), schema=None)
        text = clean_text_answer(second.text, cut_off=second.finish_reason == "length")
        if not text:
            raise SummaryError("the model returned an empty summary twice")
        return text, True

    def _reduce_text(
        self, parts: list[str], mode: str, language: str, focus: str | None, usage: _Usage
    ) -> str:
        """Summaries of chunks into one; in rounds when even the partial summaries do not fit."""
        budget = self.backend.context_length - self.answer_budget(mode) - 16
        while len(parts) > 1:
            batch = list(parts)
            while (
                len(batch) > 2 and self.count_turns(build_merge_turns(batch, mode, language, focus)) > budget
            ):
                batch = batch[: max(2, len(batch) // 2)]
            turns = build_merge_turns(batch, mode, language, focus)
            completion = self._complete(turns, usage, max_tokens=self.answer_budget(mode), schema=None)
            merged = clean_text_answer(completion.text, cut_off=completion.finish_reason == "length")
            parts = [merged or " ".join(batch), *parts[len(batch) :]]
        return parts[0]


@dataclass
class _ChunkResult:
    topics: list[Topic]
    overall: str
    drops: Drops
    repaired: bool


# ---------------------------------------------------------------------------------------------------
# Helpers (pure, tested directly)


def _check_window(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    if not messages:
        raise SummaryError("nothing to summarize: the window has no messages")
    seen: set[int] = set()
    for m in messages:
        if m.ref in seen:
            raise SummaryError(f"message ref {m.ref} appears twice in the window; refs must be unique")
        seen.add(m.ref)
    if not any(m.text.strip() for m in messages):
        raise SummaryError("nothing to summarize: every message in the window is empty")
    return list(messages)


def _line(message: ChatMessage, language: str, mode: str = "overall") -> str:
    return format_dialogue([message], language, compact=mode == "chatsum").split("\n")[1]


def _name_label(speaker: str) -> str:
    """A speaker as the grammar writes them (``model.prompts.name_text``), to map answers back."""
    return name_text(speaker)


def _shorten(message: ChatMessage, max_tokens: int, language: str) -> ChatMessage:
    """A message cut to roughly ``max_tokens`` (about 3 characters a token, 1 for CJK), marked as cut."""
    per_token = 1 if language in ("zh", "ja", "ko") else 3
    keep = max(8, max_tokens * per_token - 16)
    return message.model_copy(update={"text": message.text[:keep] + " […]"})


def balanced_chunks(
    messages: Sequence[ChatMessage],
    costs: Sequence[int],
    room: int,
    *,
    shorten: Callable[[ChatMessage, int], ChatMessage] | None = None,
) -> list[list[ChatMessage]]:
    """Contiguous chunks, each costing at most ``room``, as even in size as greedy packing allows.

    Greedy packing alone leaves a runt last chunk (a topic summarized from three messages); aiming at
    ``total / k`` per chunk, where ``k`` is the fewest chunks that can fit, avoids that. A message that
    alone exceeds ``room`` is shortened (``shorten``) rather than refused.
    """
    if room <= 0:
        raise ValueError("room must be positive")
    items: list[tuple[ChatMessage, int]] = []
    for m, c in zip(messages, costs, strict=True):
        if c > room:
            if shorten is None:
                raise SummaryError(f"message {m.ref} alone ({c} tokens) exceeds a chunk ({room} tokens)")
            m, c = shorten(m, room), room
        items.append((m, c))
    total = sum(c for _, c in items)
    k = max(1, math.ceil(total / room))
    target = min(room, math.ceil(total / k))
    chunks: list[list[ChatMessage]] = [[]]
    used = 0
    for m, c in items:
        if chunks[-1] and (used + c > room or (used >= target and len(chunks) < k)):
            chunks.append([])
            used = 0
        chunks[-1].append(m)
        used += c
    return chunks


def _uncut(completion: Completion) -> str:
    """The answer's text, or an ``OutputError`` when the token limit cut it off."""
    if completion.finish_reason == "length":
        raise OutputError(
            f"the answer was cut off at the token limit ({completion.completion_tokens} tokens); "
            "write fewer topics and shorter sentences"
        )
    return completion.text


def topic_cap(n_messages: int) -> int:
    """Most topics a window of ``n_messages`` (fillers excluded) may have: a ceiling, not a target.

    Given room for five, the 1.5B split a 31-message chat with three subjects into five topics, and a
    200-message window with four subjects into five sub-topics of one of them (the latency benchmark,
    three runs of three): it tends to use the room it gets. The ceiling follows the chats we wrote for the
    quality benchmark (2-4 subjects in 22-70 messages); five topics (the issue's upper bound) still come
    out of map-reduce over long windows, whose merge may keep up to ``MAX_TOPICS``.
    """
    if n_messages <= 3:
        return 1
    if n_messages < 40:
        return 3
    return 4


def _gist(topic: Topic) -> str:
    """What a chunk topic is about, in a few words, for the reduce step's list."""
    if topic.key_points:
        text = " ".join(p.text for p in topic.key_points[:2])
    else:
        text = " ".join(p.view for p in topic.participants[:2])
    words = text.split()
    return " ".join(words[:30]) if len(words) > 1 else text[:60]


_WITHHELD = (
    "The model's summary only repeated an instruction posted in the chat for the bot, so it is withheld.",
    "模型的摘要只是照搬了群里发给机器人的指令，因此不予显示。",
)


def _titles_sentence(topics: Sequence[Topic], language: str) -> str:
    """An overall line made of the topic titles, for when the model's own line had to go."""
    titles = [t.title.rstrip(".。;；, ") or t.title for t in topics]  # "…May 12-14." ends the sentence once
    if language == "zh":
        return "话题：" + "、".join(titles) + "。"
    return "Topics: " + "; ".join(titles) + "."


_LEAD = re.compile(r"^\s*(?:summary|摘要|总结)\s*[:：]\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?。！？](?=\s|$)")


def whole_sentences(text: str) -> str:
    """Drop a trailing fragment that a length cap cut mid-sentence (unless nothing would remain)."""
    text = " ".join(text.split())
    if not text or text[-1] in ".!?。！？…":
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends else text


def clean_text_answer(text: str, *, cut_off: bool = False) -> str:
    """A plain-text answer without a "Summary:" lead, quotes or a sentence broken by the token limit."""
    text = _LEAD.sub("", text.strip())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    text = " ".join(text.split())
    if cut_off:
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        if ends:
            text = text[: ends[-1]]
    return text


__all__ = [
    "MODES",
    "TEXT_MODES",
    "Summarizer",
    "SummaryError",
    "balanced_chunks",
    "clean_text_answer",
]
