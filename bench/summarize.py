"""SAMSum benchmark of the embedded default: Lead-3, zero-shot and few-shot side by side.

    python bench/summarize.py                 # first 200 validation dialogues, about 50 min on 2 cores
    python bench/summarize.py --limit 10      # a quick check
    python bench/summarize.py --candidates 1  # one greedy answer a dialogue instead of the consensus

Runs the production ``Summarizer`` in ``overall`` mode on ``../shared/data/samsum/validation.jsonl``
(research-only data, read in place and never copied), twice on one back-end instance: once without
and once with the prompts' in-context examples (written by us, see ``model/prompt_examples.py``).
Both prompted runs keep the consensus of ``model.candidates`` answers a dialogue (``model.consensus``),
as the product does. Lead-3 (the first three messages) is the classic baseline. All three are scored by
``finetune.eval`` (rouge-score F1 with the Porter stemmer, sacrebleu BLEU) so the numbers compare
with the issue's target of ROUGE-1/2/L = 46/21/37.

Writes ``bench/results/summarize.json`` (aggregates, timing, machine, and per-dialogue scores by
id; no dataset text and no model output, so nothing derived from SAMSum lands in the repository)
and prints a Markdown table. ``--details DIR`` additionally writes the full per-example reports,
with predictions and references, to a directory of your choice outside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import machine  # noqa: E402
from bot.config import load_config  # noqa: E402
from finetune.datasets import load_examples  # noqa: E402
from finetune.eval import (  # noqa: E402
    EvalRun,
    backend_for,
    build_summarizer,
    evaluate,
    lead_n,
    metrics_table,
    summarizer_generator,
    write_reports,
)
from finetune.metrics import EmbeddingScorer  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "samsum" / "validation.jsonl"
DEFAULT_OUT = REPO / "bench" / "results" / "summarize.json"
TARGET = {"rouge1": 46.0, "rouge2": 21.0, "rougeL": 37.0}
RUNS = ("lead3", "zero-shot", "few-shot")


def meets_target(run: EvalRun) -> bool:
    return all(run.aggregate.get(k, 0.0) >= v for k, v in TARGET.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="SAMSum-format JSONL (default: %(default)s)"
    )
    ap.add_argument("--limit", type=int, default=200, help="first N dialogues (default: %(default)s)")
    ap.add_argument(
        "--model", default=None, help="llama.cpp model name or .gguf path (default: config.toml's)"
    )
    ap.add_argument("--config", type=Path, default=None, help="config.toml to use")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {', '.join(RUNS)}")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default: %(default)s)")
    ap.add_argument("--details", type=Path, default=None, help="also write full per-example reports here")
    ap.add_argument("--embeddings", action="store_true", help="also compute BERTScore / embedding cosine")
    ap.add_argument(
        "--candidates", type=int, default=None,
        help="answers drawn per dialogue, consensus kept (default: config.toml's model.candidates)",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        ap.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    if not args.data.is_file():
        ap.error(f"data file not found: {args.data} (SAMSum lives in ../shared/data; pass --data)")

    load_before = os.getloadavg()
    config = load_config(args.config)
    candidates = args.candidates if args.candidates is not None else config.model.candidates
    if candidates < 1:
        ap.error("--candidates must be at least 1")
    examples = load_examples(args.data, limit=args.limit, mode="overall")
    embed = EmbeddingScorer() if args.embeddings else None
    backend = None
    results: list[EvalRun] = []
    started = time.perf_counter()
    for run_name in runs:
        if run_name == "lead3":
            generate = lead_n(3)
            info: dict[str, Any] = {"method": "first 3 messages, 'Name: text' as in the dialogue"}
        else:
            if backend is None:  # one instance for both prompted runs: it keeps llama.cpp's KV cache
                backend = backend_for(config, "llama_cpp", args.model)
            few = run_name == "few-shot"
            summarizer = build_summarizer(
                backend,
                language="en",
                few_shot=few,
                max_new_tokens=config.model.max_new_tokens,
                candidates=candidates,
                candidate_temperature=config.model.candidate_temperature,
            )
            generate = summarizer_generator(summarizer, "overall")
            info = {"model": backend.model_id, "backend": backend.name, "few_shot": few,
                    "candidates": candidates}
        run = evaluate(
            examples,
            generate,
            mode="overall",
            name=run_name,
            language="en",
            embeddings=embed,
            progress=not args.no_progress,
            info=info,
        )
        results.append(run)
        if args.details:
            write_reports(run, args.details / run_name)

    table = metrics_table(results)
    prompted = [r for r in results if r.name == "few-shot"]
    verdict = ""
    if prompted:
        best = prompted[0]
        verdict = (
            f"few-shot vs target {TARGET['rouge1']:.0f}/{TARGET['rouge2']:.0f}/{TARGET['rougeL']:.0f}: "
            + ("MET" if meets_target(best) else "NOT met")
            + " ({:.2f}/{:.2f}/{:.2f})".format(*(best.aggregate[k] for k in TARGET))
        )
    out = {
        "benchmark": "SAMSum validation, overall mode",
        "data": str(args.data),
        "n": len(examples),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "scorer": results[0].notes if results else {},
        "target": TARGET,
        "wall_seconds": round(time.perf_counter() - started, 1),
        # Timings are only meaningful on an otherwise idle machine: llama.cpp threads spin-wait, so
        # other processes on the same cores slow it down many times over. The load shows whether they did.
        "load_average_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "runs": {
            r.name: {
                "info": r.info,
                "aggregate": {k: round(v, 2) for k, v in r.aggregate.items()},
                "timing": {k: round(v, 3) for k, v in r.timing.items()},
                "failures": r.failures,
                "per_example": {x.id: {k: round(v, 2) for k, v in x.scores.items()} for x in r.results},
            }
            for r in results
        },
        "table_markdown": table,
        "verdict": verdict,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(
        f"\nSAMSum validation, first {len(examples)} dialogues, overall mode ({machine()['cpu']}, "
        f"{machine()['cores']} cores)\n"
    )
    print(table)
    if verdict:
        print(f"\n{verdict}")
    busy = max(load_before[0], os.getloadavg()[0])
    if busy > machine()["cores"]:
        print(
            f"\nwarning: load average {busy:.1f} on {machine()['cores']} cores: other processes were "
            "competing for the CPU, so the speed figures understate this machine",
            file=sys.stderr,
        )
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
