"""Storage and windowing speed on synthetic chats: bulk import, live inserts, windowing, peak memory.

    python bench/ingest.py                      # the full run: 1M imported, 20k live, 1M windowed
    python bench/ingest.py --messages 100000    # a quick look

Targets (issue 2): bulk import >= 100k messages/s, live single-message inserts >= 2k/s, windowing 1M
messages <= 5 s. Everything goes through the real code paths: ``Ingestor.ingest`` into a real SQLite
file migrated by Alembic, ``Ingestor.ingest_one`` (one transaction per message, as the bots do), and
``storage.queries.load_window_messages`` + ``model.windows.slice_windows`` for every chat. Message
generation is not timed: each chunk is generated first, then handed to the code under test.

The machine matters: the figures are printed with the CPU count and the load average before and after,
plus process CPU time next to wall time (on a shared machine wall time includes waiting for a core).
Results go to bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import START, synthetic_messages
from model.windows import slice_windows
from storage.db import Database
from storage.ingest import Ingestor
from storage.models import Chat
from storage.queries import load_window_messages

TARGETS = {"bulk_msgs_per_s": 100_000, "live_msgs_per_s": 2_000, "windowing_s": 5.0}
RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class _Clock:
    """Accumulates wall and process CPU time over the timed sections only."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def __enter__(self) -> _Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def bench_bulk(ingestor: Ingestor, n: int, seed: int, batch_size: int, chunk: int) -> dict:
    clock, gen = _Clock(), _Clock()
    added = duplicates = 0
    stream = synthetic_messages(n, seed=seed)
    while True:
        with gen:
            msgs = list(islice(stream, chunk))
        if not msgs:
            break
        with clock:
            res = ingestor.ingest(msgs, batch_size=batch_size)
        added += res.added
        duplicates += res.duplicates
    # Re-importing a slice of the same export: everything is a duplicate.
    again = list(islice(synthetic_messages(n, seed=seed), min(n, 100_000)))
    reclock = _Clock()
    with reclock:
        res = ingestor.ingest(again, batch_size=batch_size)
    return {
        "messages": n, "added": added, "duplicates": duplicates, "batch_size": batch_size,
        "wall_s": round(clock.wall, 2), "cpu_s": round(clock.cpu, 2),
        "msgs_per_s": round(n / clock.wall), "msgs_per_cpu_s": round(n / clock.cpu),
        "generation_s_untimed": round(gen.wall, 2),
        "reimport": {"messages": len(again), "added": res.added, "duplicates": res.duplicates,
                     "msgs_per_s": round(len(again) / reclock.wall)},
        "peak_rss_mib": round(_peak_rss_mib()),
    }


def bench_live(ingestor: Ingestor, n: int, seed: int, bulk_n: int) -> dict:
    # New messages in the same chats, after the imported history, in arrival order across chats.
    msgs = list(synthetic_messages(n, seed=seed + 1, interleaved=True, first_id=bulk_n + 1,
                                   start=START + timedelta(days=3650)))
    lat: list[float] = []
    clock = _Clock()
    added = 0
    with clock:
        for m in msgs:
            t = time.perf_counter()
            added += ingestor.ingest_one(m).added
            lat.append(time.perf_counter() - t)
    lat.sort()
    return {
        "messages": n, "added": added, "wall_s": round(clock.wall, 2), "cpu_s": round(clock.cpu, 2),
        "msgs_per_s": round(n / clock.wall), "msgs_per_cpu_s": round(n / clock.cpu),
        "latency_ms": {"p50": round(statistics.median(lat) * 1000, 3),
                       "p99": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
                       "max": round(lat[-1] * 1000, 3)},
        "peak_rss_mib": round(_peak_rss_mib()),
    }


def bench_windows(db: Database, gap_minutes: float, max_tokens: int) -> dict:
    load, work = _Clock(), _Clock()
    per_chat = []
    with db.session() as session:
        chat_pks = list(session.scalars(Chat.__table__.select().with_only_columns(Chat.id)))
        with load:
            for pk in chat_pks:
                per_chat.append(load_window_messages(session, pk))
    n = sum(len(c) for c in per_chat)
    windows = truncated = 0
    with work:
        for msgs in per_chat:
            ws = slice_windows(msgs, gap=timedelta(minutes=gap_minutes), max_tokens=max_tokens)
            windows += len(ws)
            truncated += sum(w.truncated for w in ws)
    return {
        "messages": n, "chats": len(chat_pks), "windows": windows, "truncated_messages": truncated,
        "gap_minutes": gap_minutes, "max_tokens": max_tokens,
        "windowing_wall_s": round(work.wall, 2), "windowing_cpu_s": round(work.cpu, 2),
        "load_from_sqlite_wall_s": round(load.wall, 2),
        "peak_rss_mib": round(_peak_rss_mib()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000, help="bulk import size (default 1M)")
    ap.add_argument("--live", type=int, default=20_000, help="single-message inserts (default 20k)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=5000, help="messages per import transaction")
    ap.add_argument("--gap-minutes", type=float, default=30.0)
    ap.add_argument("--max-tokens", type=int, default=3000)
    ap.add_argument("--db", type=Path, help="SQLite file to use (default: a fresh temporary one)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="chatsum-bench-")
    db_path = args.db or Path(tmp.name) / "bench.db"
    if db_path.exists():
        print(f"--db {db_path} exists; the benchmark needs a fresh file", file=sys.stderr)
        return 2
    db = Database(f"sqlite:///{db_path}")
    ingestor = Ingestor(db)
    report: dict = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_before": _loadavg()},
        "targets": TARGETS,
    }
    print(f"bulk import of {args.messages:,} messages…", flush=True)
    report["bulk"] = bench_bulk(ingestor, args.messages, args.seed, args.batch_size, chunk=50_000)
    print(f"{args.live:,} live single-message inserts…", flush=True)
    report["live"] = bench_live(ingestor, args.live, args.seed, args.messages)
    print("windowing every chat…", flush=True)
    report["windows"] = bench_windows(db, args.gap_minutes, args.max_tokens)
    report["db_file_mib"] = round(sum(p.stat().st_size for p in db_path.parent.glob(db_path.name + "*"))
                                  / 2**20)
    report["machine"]["loadavg_after"] = _loadavg()
    report["peak_rss_mib"] = round(_peak_rss_mib())
    db.dispose()
    tmp.cleanup()

    b, lv, w = report["bulk"], report["live"], report["windows"]
    rows = [
        ("bulk import", f"{b['messages']:,} msgs", f"{b['wall_s']} s", f"{b['msgs_per_s']:,}/s",
         f"{b['msgs_per_cpu_s']:,}/s", f">= {TARGETS['bulk_msgs_per_s']:,}/s",
         b["msgs_per_s"] >= TARGETS["bulk_msgs_per_s"]),
        ("re-import (duplicates)", f"{b['reimport']['messages']:,} msgs", "",
         f"{b['reimport']['msgs_per_s']:,}/s", "", "", None),
        ("live ingest_one", f"{lv['messages']:,} msgs", f"{lv['wall_s']} s", f"{lv['msgs_per_s']:,}/s",
         f"{lv['msgs_per_cpu_s']:,}/s", f">= {TARGETS['live_msgs_per_s']:,}/s",
         lv["msgs_per_s"] >= TARGETS["live_msgs_per_s"]),
        ("windowing", f"{w['messages']:,} msgs", f"{w['windowing_wall_s']} s",
         f"{w['messages'] / max(w['windowing_wall_s'], 1e-9):,.0f}/s", f"cpu {w['windowing_cpu_s']} s",
         f"<= {TARGETS['windowing_s']} s", w["windowing_wall_s"] <= TARGETS["windowing_s"]),
    ]
    print(f"\n{'':24} {'size':>14} {'wall':>9} {'rate':>12} {'rate/cpu-s':>12} {'target':>14}  met")
    for name, size, wall, rate, cpu, target, met in rows:
        flag = "" if met is None else ("yes" if met else "NO")
        print(f"{name:24} {size:>14} {wall:>9} {rate:>12} {cpu:>12} {target:>14}  {flag}")
    print(f"\nlive latency p50 {lv['latency_ms']['p50']} ms, p99 {lv['latency_ms']['p99']} ms; "
          f"{w['windows']:,} windows ({w['truncated_messages']} messages truncated); "
          f"loading them from SQLite took {w['load_from_sqlite_wall_s']} s")
    print(f"peak RSS {report['peak_rss_mib']} MiB (after bulk {b['peak_rss_mib']}, after windowing "
          f"{w['peak_rss_mib']}); database {report['db_file_mib']} MiB")
    m = report["machine"]
    print(f"machine: {m['cpus']} CPUs, load average before {m['loadavg_before']} after {m['loadavg_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
