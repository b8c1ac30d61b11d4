"""ChatSum through an OpenAI-compatible server: the same summaries with their questions sent one after
the other (``[model.openai] parallel = 1``, the default) and together (``--parallel``, 8).

The server is yours to start; this bench only talks to it. What was measured for the README is a
llama.cpp ``llama-server`` built from the llama.cpp that llama-cpp-python 0.3.36 vendors, serving the
embedded default's GGUF with four slots and continuous batching::

    llama-server -m ~/.local/share/chatsum/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \\
        --port 8081 -c 32768 -np 4 -t 2 --no-repack

(``--no-repack`` on a CPU with AMX, for the reason in ``model/backends/llama_cpp_backend.py``.) vLLM
takes the same requests. Each window is one of ``bench/chatsum_latency.py``'s planted 200-message
windows; a window is summarized with each setting in turn, so both meet the server's prefix cache in
the same state (its instruction prefix already read, the chat not).

    python bench/chatsum_server.py --base-url http://127.0.0.1:8081/v1 --runs 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chatsum_latency import planted_window, subjects_found


def one_run(base_url: str, model: str, parallel: int, seed: int) -> dict[str, Any]:
    from model.backends.openai_backend import OpenAIBackend
    from model.summarizer import Summarizer

    backend = OpenAIBackend(base_url, model, timeout_s=600, parallel=parallel, seed=0)
    try:
        window, topic_of = planted_window(seed)
        start = time.perf_counter()
        summary = Summarizer(backend, max_new_tokens=1024).summarize(window, mode="chatsum")
        seconds = time.perf_counter() - start
    finally:
        backend.close()
    return {
        "seed": seed,
        "parallel": parallel,
        "seconds": round(seconds, 2),
        "calls": summary.meta.extra.get("calls"),
        "completion_tokens": summary.meta.completion_tokens,
        "topics": len(summary.topics),
        "planted_found": subjects_found(summary, topic_of),
        "titles": [t.title for t in summary.topics],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="the server's OpenAI API, e.g. http://127.0.0.1:8081/v1")
    parser.add_argument("--model", default="", help="the model name the server expects (llama-server: any)")
    parser.add_argument("--runs", type=int, default=3, help="windows (seeds 1001…), each with both settings")
    parser.add_argument("--parallel", type=int, default=8, help="the setting compared with 1")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "chatsum_server.json"
    )
    args = parser.parse_args(argv)
    # Warm the server's prefix cache with the instructions, as a running server's would be.
    one_run(args.base_url, args.model, args.parallel, 1000)
    rows = []
    for run in range(args.runs):
        for parallel in (1, args.parallel):
            row = one_run(args.base_url, args.model, parallel, 1001 + run)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    settings = (1, args.parallel)
    summary = {str(p): statistics.median(r["seconds"] for r in rows if r["parallel"] == p) for p in settings}
    report = {
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "base_url": args.base_url,
        "median_seconds_by_parallel": summary,
        "runs": rows,
    }
    print(f"median seconds: one at a time {summary['1']}, together {summary[str(args.parallel)]}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
