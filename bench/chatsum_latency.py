"""ChatSum latency: a 200-message window in ``chatsum`` mode, end to end, on the local CPU.

The issue's target: <= 45 s (p50 and p95 over 5 runs) with the embedded 1.5B default and <= 20 s with
the 0.5B, on the 2-core machine. The window is a realistic team chat generated from scripts written
for this benchmark (four planted topics — a release, an incident, an office move, a team offsite —
interleaved the way a busy channel interleaves them, with acknowledgements and replies); each run uses
a different seed, so speakers, interleaving and reply targets change and the KV cache can only re-use
the stable prompt prefix (instructions and example), never the chat itself.

Each run is what one ``chatsum summarize`` process does: a new back-end loads the model, reads the
stored instruction prefix from disk (``model.llama_cpp.prefix_cache_mb``) and summarizes. Run 0 starts
from an empty prefix store, as the very first summary on a machine does, and is reported as ``cold``;
p50/p95 are over the ``--runs`` runs after it. ``--reuse-backend`` keeps one back-end for every run
instead (a running bot), where run 0 is the only one that loads and reads the prefix.

Reported per model: p50/p95 seconds end to end (``Summarizer.summarize``, model load included), prompt tokens,
prefill and decode tokens/s (llama.cpp's own counters), peak RSS, topic count vs planted, views per
topic vs speakers, the share of copied views, and whether the JSON was cut off.

    python bench/chatsum_latency.py                       # 1.5B and 0.5B: a cold run, then 5 timed
    python bench/chatsum_latency.py --models qwen2.5-coder-0.5b --runs 3 --json /tmp/out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.schema import ChatMessage, Summary

# Each script line: (role, text, replies_to_previous_line_of_this_topic)
_RELEASE = [
    ("P", "Release check: are we still on track to ship 2.4 on Friday?", False),
    ("D1", "Mostly. The payment retry bug is still open though", True),
    ("P", "How bad is it?", True),
    ("D1", "If a card payment times out we retry twice and sometimes charge the customer twice", False),
    ("Q", "I reproduced it on staging yesterday, about 1 in 20 timeouts", False),
    ("P", "That's a blocker for me, we can't ship double charges", False),
    ("D2", "Agreed. I can pair with you on it this afternoon", False),
    ("D1", "Thanks, I think the idempotency key isn't passed on the second retry", True),
    ("D2", "Yeah the retry path builds a new request object, that would do it", True),
    ("Q", "Once you have a fix I need at least a day for the full payment regression suite", False),
    ("P", "So if the fix lands Wednesday, QA Thursday, release Friday still works?", False),
    ("Q", "Tight but doable, as long as nothing else breaks", True),
    ("D1", "I'd rather not promise Wednesday, the retry code has no tests at all", False),
    ("P", "What would you need to feel safe?", True),
    ("D1", "Write tests for the retry path first, then fix. Realistically Thursday morning", False),
    ("Q", "Then regression runs into Friday and we release late Friday afternoon. I don't love that", False),
    ("S", "Please no Friday evening deploys, nobody wants a weekend page", False),
    ("P", "Fair. What about Monday morning instead?", False),
    ("D2", "Monday works for me", True),
    ("Q", "Monday gives me Friday for regression, much better", False),
    ("D1", "+1 for Monday", False),
    ("P", "I need to tell support and the two customers waiting for the export feature", False),
    ("P", "Ok decision: 2.4 moves to Monday 10:00, the retry fix is the only blocker", False),
    ("S", "I'll book the deploy window Monday 10-12 and be on the bridge", False),
    ("D2", "Should we also feature-flag the new export so it can be switched off?", False),
    ("P", "Good idea, is that a lot of work?", True),
    ("D2", "Half a day, the flag service is already wired in", True),
    ("P", "Do it, but after the retry fix", False),
    ("Q", "Can someone update the release notes? They still say Friday", False),
    ("P", "I'll do the release notes and the customer email today", True),
    ("D1", "First test for the retry path is up, it fails as expected 🙂", False),
    ("D2", "Reviewing", True),
    ("D1", "Fix is in the same PR now, the key is reused across retries", False),
    ("Q", "I'll start the regression run on staging tomorrow morning then", False),
    ("D2", "PR approved, nice and small", False),
    ("P", "Great work both. Still Monday, no need to rush Friday", False),
    ("Q", "Regression is green except one flaky refund test, unrelated", False),
    ("D1", "The flaky one is the timezone test again, I'll mark it and file a ticket", True),
    ("P", "Thanks. So we're go for Monday", False),
    ("S", "Deploy window booked, runbook updated", False),
]

_INCIDENT = [
    ("S", "Heads up: the orders database ran out of disk at 02:10 last night", False),
    ("D2", "Ouch. Was anything lost?", True),
    ("S", "No data loss, writes failed for about 25 minutes until I expanded the volume", True),
    ("P", "Did customers notice?", False),
    ("S", "Checkout showed errors for those 25 minutes, roughly 300 failed orders", True),
    ("P", "Can we contact those customers? Support will want a list", False),
    ("S", "I can export the failed order attempts from the logs", True),
    ("O", "Send it to me and I'll pass it to the support lead", False),
    ("D1", "What filled the disk? It had 40% free last week", False),
    ("S", "The audit log table. It grew 30 GB in three days", True),
    ("D1", "That's the new verbose logging from the 2.3 hotfix, isn't it", True),
    ("D2", "Yes, we turned on debug level for payments and never turned it off", False),
    ("S", "So two fixes: turn debug off and add an alert at 80% disk", False),
    ("D2", "I'll switch the log level back today", True),
    ("S", "And I'll add the disk alert, we only had one at 95% which fired at 02:05", False),
    ("P", "Only five minutes warning, that's useless", True),
    ("S", "Exactly. New alerts at 80% and 90%, paging at 90", False),
    ("D1", "Should we also move the audit log out of the main database?", False),
    ("S", "Long term yes, to object storage. Not this week", True),
    ("P", "Let's put it on the roadmap for next quarter", False),
    ("Q", "Do we need a postmortem for this?", False),
    ("S", "Yes, customer impact, so a written postmortem", True),
    ("S", "I'll draft it today and share it tomorrow", False),
    ("P", "Please include the timeline and the customer count", True),
    ("D2", "Log level is back to info, deployed", False),
    ("S", "Disk usage already flat, good", True),
    ("S", "Alerts at 80 and 90 are live", False),
    ("O", "Support has the list of 300 orders, they're emailing people a discount code", False),
    ("P", "Good call on the discount", True),
    ("S", "Postmortem draft is in the wiki, comments welcome", False),
    ("D1", "Read it, clear. One thing: the on-call didn't get the 95% alert on phone", False),
    ("S", "Right, the pager app was muted on my phone, my mistake. Added to action items", True),
]

_OFFICE = [
    ("O", "Office move update: the new office on Harbour Street is ready from the 15th", False),
    ("D1", "Finally! Do we know the seating plan yet?", True),
    ("O", "Draft plan: engineering on the 3rd floor, sales and support on the 2nd", True),
    ("Q", "Is there a quiet room? Open space is hard for test sessions", False),
    ("O", "Two phone booths and one quiet room per floor", True),
    ("D2", "What about parking? I drive in twice a week", False),
    ("O", "Only 10 spaces, first come first served, but there's a bike room", True),
    ("D2", "Hmm, I'll probably take the train then", False),
    ("S", "Is the internet line installed? I need wired ethernet for the on-call desk", False),
    ("O", "Fibre installation is on the 12th, I'll check they put ethernet at every desk", True),
    ("S", "At least for the on-call desks please, wifi is not enough during incidents", True),
    ("O", "Noted, I'll ask for wired ports at the on-call desks", False),
    ("P", "When do we have to pack our stuff?", False),
    ("O", "Boxes arrive on the 10th, everything packed by Friday the 13th, movers come Saturday", True),
    ("D1", "Friday the 13th, very reassuring 😅", False),
    ("O", "Label every box with your name and floor, monitors go in the special crates", False),
    ("Q", "Can we keep our current monitors or do we get new ones?", False),
    ("O", "You keep them. New docking stations for everyone though", True),
    ("D2", "Nice, the old docks keep dropping the second screen", False),
    ("P", "Anything we need to do for access badges?", False),
    ("O", "Send me a photo by Wednesday and I'll order the badges", True),
    ("D1", "Sent", False),
    ("S", "Sent mine too", False),
    ("O", "Reminder: last day in the old office is Friday, we work from home on Monday the 16th", False),
    ("Q", "So first day in the new office is Tuesday?", True),
    ("O", "Yes, Tuesday the 17th, breakfast on me", True),
]

_OFFSITE = [
    ("P", "Separate topic: the team offsite. I have budget for two days in May", False),
    ("D1", "Yes please! Somewhere outside the city?", True),
    ("P", "Options so far: a lake house near Annecy or a hotel in Lyon", False),
    ("Q", "Lake house sounds better, hotels feel like a conference", False),
    ("D2", "Lake house, but is there decent wifi? We'll want to do a hackday", False),
    ("P", "They say fibre, I'll double check", True),
    ("O", "Dates? The week of the 13th is the office move, so not that one", False),
    ("P", "I was thinking 22nd and 23rd of May", True),
    ("S", "I'm on call that week, someone would need to swap with me", False),
    ("D1", "I can take your on-call that week, you take mine in June", True),
    ("S", "Deal, thanks", True),
    ("Q", "What's the plan for the two days?", False),
    ("P", "Day one planning for the next quarter, day two hackday and a hike", False),
    ("D2", "Can the hackday include the audit log migration? Would be a fun project", False),
    ("P", "Sure, pitch it and see who joins", True),
    ("O", "I'll get quotes for a minibus from the office, it's about two hours by road", False),
    ("D1", "Can we do a barbecue on the first evening?", False),
    ("P", "If the weather is okay, yes", True),
    ("Q", "I'm vegetarian, just so whoever shops knows", False),
    ("O", "Noted, I'll collect dietary needs in a form", True),
    ("P", "Please vote in the poll: lake house or Lyon, by Thursday", False),
    ("D2", "Voted lake house", False),
    ("S", "Lake house", False),
    ("P", "Lake house wins 5 to 1. I'll book it for the 22nd and 23rd", False),
    ("O", "And I'll book the minibus once the form is in", True),
]

_ACKS = [
    "ok",
    "👍",
    "thanks!",
    "+1",
    "makes sense",
    "sounds good",
    "nice",
    "agreed",
    "lol",
    "on it",
    "got it",
    "cool",
    "👀",
    "sure",
    "perfect",
    "noted",
    "thx",
    "yes",
    "haha",
    "great",
]
_ROLES = ("P", "D1", "D2", "Q", "S", "O")
_NAMES = (
    "Anna",
    "Ben",
    "Carlos",
    "Dana",
    "Eve",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemal",
    "Lucia",
)
PLANTED_TOPICS = 4


def synthetic_window(seed: int, n_messages: int = 200) -> list[ChatMessage]:
    """A 200-message team chat with four planted topics, interleaved; deterministic for a seed."""
    return planted_window(seed, n_messages)[0]


def planted_window(seed: int, n_messages: int = 200) -> tuple[list[ChatMessage], dict[int, int]]:
    """``synthetic_window`` and the planted topic (0-3) of each of its content messages, by ref."""
    rng = random.Random(seed)
    names = dict(zip(_ROLES, rng.sample(_NAMES, len(_ROLES)), strict=True))
    scripts = [list(_RELEASE), list(_INCIDENT), list(_OFFICE), list(_OFFSITE)]
    # Topics open in a seeded order, overlapping: the next topic starts before the previous one ends.
    order = list(range(len(scripts)))
    rng.shuffle(order)
    active: list[int] = [order.pop(0)]
    pos = [0] * len(scripts)
    content: list[tuple[int, str, str, bool]] = []  # (topic, role, text, is_reply)
    while active or order:
        # The next topic opens once the oldest open one is mostly done (or, rarely, out of the blue).
        if order and (
            not active
            or pos[active[0]] >= 0.75 * len(scripts[active[0]])
            or (len(active) == 1 and rng.random() < 0.02)
        ):
            active.append(order.pop(0))
        topic = active[0] if len(active) == 1 or rng.random() < 0.75 else rng.choice(active[1:])
        role, text, is_reply = scripts[topic][pos[topic]]
        content.append((topic, role, text, is_reply))
        pos[topic] += 1
        if pos[topic] >= len(scripts[topic]):
            active.remove(topic)
    # Acknowledgements ("ok", "+1") follow content lines, never more than two in a row.
    n_acks = max(0, n_messages - len(content))
    ack_after = [0] * len(content)
    slots = [i for i in range(len(content)) for _ in range(2)]
    for i in rng.sample(slots, min(n_acks, len(slots))):
        ack_after[i] += 1
    last_ref: dict[int, int] = {}
    out: list[ChatMessage] = []
    topic_of: dict[int, int] = {}
    t = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
    for i, (topic, role, text, is_reply) in enumerate(content):
        ref = len(out) + 1
        t += timedelta(seconds=rng.randint(10, 240))
        reply = last_ref.get(topic) if is_reply and last_ref.get(topic) != ref - 1 else None
        out.append(ChatMessage(ref=ref, speaker=names[role], text=text, sent_at=t, reply_to_ref=reply))
        topic_of[ref] = topic
        last_ref[topic] = ref
        for _ in range(ack_after[i]):
            t += timedelta(seconds=rng.randint(5, 60))
            speaker = rng.choice([n for n in names.values() if n != out[-1].speaker])
            out.append(ChatMessage(ref=len(out) + 1, speaker=speaker, text=rng.choice(_ACKS), sent_at=t))
    return out[:n_messages], {r: k for r, k in topic_of.items() if r <= n_messages}


def subjects_found(summary: Summary, topic_of: dict[int, int]) -> int:
    """How many planted topics some summary topic is tied to: the one most of its cited messages are
    of (the rule of ``bench/chatsum_quality.py``'s "planted topics found")."""
    from bench.chatsum_quality import tie_by_refs

    return len({k for k in (tie_by_refs(topic_of, t) for t in summary.topics) if k is not None})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def bench_model(
    name: str,
    runs: int,
    n_ctx: int,
    cache_dir: str | None,
    threads: int,
    *,
    reuse_backend: bool = False,
    missed_topics: bool = True,
) -> dict[str, Any]:
    from bot.config import Config
    from model.backends.llama_cpp_backend import LlamaCppBackend
    from model.summarizer import Summarizer
    from model.weights import resolve_model

    path = resolve_model(name, cache_dir or Config().data_dir)
    store = tempfile.mkdtemp(prefix="chatsum-prefix-")  # empty: run 0 is a machine's first summary

    def new_summarizer() -> Summarizer:
        backend = LlamaCppBackend(path, n_ctx=n_ctx, n_threads=threads, model_id=name, prefix_cache_dir=store)
        return Summarizer(backend, max_new_tokens=1024, missed_topics=missed_topics)

    summarizer = new_summarizer()
    rows: list[dict[str, Any]] = []
    for run in range(runs + 1):
        window, topic_of = planted_window(seed=1000 + run)
        start = time.perf_counter()
        if run > 0 and not reuse_backend:  # a new process: the old model is freed first
            del summarizer
            gc.collect()
            summarizer = new_summarizer()
        summary = summarizer.summarize(window, mode="chatsum")
        seconds = time.perf_counter() - start
        meta = summary.meta
        speakers_per_topic = [len(t.participants) for t in summary.topics]
        row = {
            "run": run,
            "seconds": round(seconds, 2),
            "prompt_tokens": meta.prompt_tokens,
            "completion_tokens": meta.completion_tokens,
            "prefill_tokens": meta.extra.get("prefill_tokens"),
            "restored_prefix_tokens": meta.extra.get("restored_prefix_tokens"),
            "prefill_tok_s": round(meta.extra["prefill_tokens"] / meta.extra["prefill_seconds"], 1)
            if meta.extra.get("prefill_seconds")
            else None,
            "decode_tok_s": round(meta.extra["decode_tokens"] / meta.extra["decode_seconds"], 1)
            if meta.extra.get("decode_seconds")
            else None,
            "calls": meta.extra.get("calls"),
            "repaired": meta.repaired,
            "cut_off": meta.extra.get("cut_off"),
            "topics": len(summary.topics),
            "planted_topics": PLANTED_TOPICS,
            "planted_found": subjects_found(summary, topic_of),
            "missed_asked": meta.extra.get("missed_asked"),
            "added_topics": meta.extra.get("added_topics"),
            "missed_seconds": meta.extra.get("missed_seconds"),
            "views_per_topic": speakers_per_topic,
            "copied_views": meta.extra.get("copied_views"),
            "views": meta.extra.get("views"),
            "dropped_refs": meta.dropped_refs,
            "dropped_speakers": meta.dropped_speakers,
            "titles": [t.title for t in summary.topics],
        }
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    shutil.rmtree(store, ignore_errors=True)
    timed = [r["seconds"] for r in rows[1:]]
    return {
        "model": name,
        "process_per_run": not reuse_backend,
        "missed_topics": missed_topics,
        "runs": rows,
        "cold_s": rows[0]["seconds"],
        "p50_s": round(statistics.median(timed), 2),
        "p95_s": round(_percentile(timed, 0.95), 2),
        "prefill_tok_s_median": statistics.median(r["prefill_tok_s"] or 0 for r in rows[1:]),
        "decode_tok_s_median": statistics.median(r["decode_tok_s"] or 0 for r in rows[1:]),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"])
    parser.add_argument("--runs", type=int, default=5, help="timed runs after the cold one")
    parser.add_argument(
        "--reuse-backend", action="store_true", help="one back-end for all runs (a running bot)"
    )
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument(
        "--no-missed", action="store_true", help="skip the missed-subjects question (model.missed_topics)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="model cache directory (default: the config's data_dir)"
    )
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: all cores)")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).parent / "results" / "chatsum_latency.json",
        help="write the results here (default: %(default)s)",
    )
    parser.add_argument("--show-window", action="store_true", help="print the window and exit")
    args = parser.parse_args(argv)
    if args.show_window:
        from model.prompts import format_dialogue

        print(format_dialogue(synthetic_window(1000)))
        return 0
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    results = []
    for name in args.models:
        # Peak RSS is per process: run each model in its own process for a fair figure.
        if len(args.models) > 1:
            import subprocess

            cmd = [
                sys.executable,
                __file__,
                "--models",
                name,
                "--runs",
                str(args.runs),
                "--n-ctx",
                str(args.n_ctx),
            ]
            if args.cache_dir:
                cmd += ["--cache-dir", args.cache_dir]
            cmd += ["--threads", str(args.threads)]
            if args.reuse_backend:
                cmd.append("--reuse-backend")
            if args.no_missed:
                cmd.append("--no-missed")
            out = Path(f"/tmp/chatsum_latency_{name}.json")
            subprocess.run([*cmd, "--json", str(out)], check=True)
            results.extend(json.loads(out.read_text())["results"])
        else:
            reuse = args.reuse_backend
            row = bench_model(
                name,
                args.runs,
                args.n_ctx,
                args.cache_dir,
                args.threads,
                reuse_backend=reuse,
                missed_topics=not args.no_missed,
            )
            results.append(row)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    report = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"Python {platform.python_version()}",
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "results": results,
    }
    for r in results:
        print(
            f"{r['model']}: p50 {r['p50_s']} s, p95 {r['p95_s']} s (cold {r['cold_s']} s), "
            f"prefill {r['prefill_tok_s_median']} tok/s, decode {r['decode_tok_s_median']} tok/s, "
            f"peak RSS {r['peak_rss_mb']} MB"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
