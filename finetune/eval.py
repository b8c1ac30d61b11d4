"""The evaluation harness: run a summarizer over a JSONL dataset and score it against the references.

``python -m finetune eval --data FILE.jsonl`` is the command; the fine-tuning pipeline and
``bench/summarize.py`` call ``evaluate`` directly. A *generator* (anything that turns an
``EvalExample`` into a ``Generation``) is what gets scored, so the production summarizer, a baseline
such as Lead-3 and a fine-tuned model are all measured by exactly the same code and metrics.

One failed dialogue (a model error, an unparseable answer) does not end a 200-dialogue run: it is
scored as an empty summary, its error is kept in the report, and the failures are counted.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from finetune.datasets import EVAL_MODES, DatasetError, EvalExample, load_examples
from finetune.metrics import CorpusScores, EmbeddingScorer, score_corpus
from model.schema import ChatMessage

BACKENDS: tuple[str, ...] = ("llama_cpp", "transformers", "openai")


@dataclass
class Generation:
    """What a generator produced for one example, with the cost of producing it."""

    text: str
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Generator = Callable[[EvalExample], Generation]

#: A run stops when its first this-many dialogues all fail: that is a broken set-up (model missing,
#: server down), not one bad dialogue, and an hour of identical errors helps nobody.
ABORT_AFTER_FAILURES = 3


class EvalError(RuntimeError):
    """The evaluation could not run; the message says what failed."""


@dataclass
class ExampleResult:
    id: str
    reference: str
    prediction: str
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    scores: dict[str, float]
    error: str | None = None
    focus: str | None = None


@dataclass
class EvalRun:
    """One scored run: aggregate metrics, timing and every example's output."""

    name: str
    mode: str
    language: str
    aggregate: dict[str, float]
    timing: dict[str, float]
    notes: dict[str, Any]
    results: list[ExampleResult]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return sum(1 for r in self.results if r.error)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "language": self.language,
            "n": len(self.results),
            "failures": self.failures,
            "aggregate": {k: round(v, 4) for k, v in self.aggregate.items()},
            "timing": {k: round(v, 4) for k, v in self.timing.items()},
            "metrics": self.notes,
            "info": self.info,
            "examples": [asdict(r) for r in self.results],
        }


# --------------------------------------------------------------------------- generators


def transcript_line(message: ChatMessage) -> str:
    return f"{message.speaker}: {message.text}"


def lead_n(n: int = 3) -> Generator:
    """The Lead-N baseline: the first N messages of the chat, as written ("Name: text")."""

    def generate(example: EvalExample) -> Generation:
        return Generation(text="\n".join(transcript_line(m) for m in example.messages[:n]))

    return generate


def summarizer_generator(summarizer: Any, mode: str) -> Generator:
    """Wrap a ``model.summarizer.Summarizer``: the summary's ``overall`` text is what gets scored.

    For ``overall`` and the role modes (``user``/``agent``/``all``) the summarizer puts the plain
    summary in ``Summary.overall``; ``aspect`` passes the record's topic as the focus.
    """

    def generate(example: EvalExample) -> Generation:
        focus = example.focus if mode == "aspect" else None
        start = time.perf_counter()
        try:
            summary = summarizer.summarize(example.messages, mode=mode, focus=focus)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one bad dialogue must not end the run; the error is reported
            return Generation(
                text="", seconds=time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}"
            )
        meta = summary.meta
        keep = ("prefill_tokens", "prefill_seconds", "decode_tokens", "decode_seconds", "calls", "cut_off")
        extra = {k: meta.extra[k] for k in keep if k in meta.extra}
        extra.update(repaired=meta.repaired, chunks=meta.chunks, prompt_version=meta.prompt_version)
        return Generation(
            text=summary.overall.strip(),
            seconds=time.perf_counter() - start,
            prompt_tokens=meta.prompt_tokens,
            completion_tokens=meta.completion_tokens,
            extra=extra,
        )

    return generate


# --------------------------------------------------------------------------- running


def corpus_language(examples: Sequence[EvalExample]) -> str:
    """The language the metrics use for the whole run: the most common one among the examples."""
    return Counter(ex.language for ex in examples).most_common(1)[0][0] if examples else "en"


def evaluate(
    examples: Sequence[EvalExample],
    generate: Generator,
    *,
    mode: str,
    name: str = "model",
    language: str | None = None,
    embeddings: EmbeddingScorer | None = None,
    progress: bool = True,
    info: dict[str, Any] | None = None,
) -> EvalRun:
    """Generate a summary for every example, then score them all (ROUGE, BLEU, embeddings)."""
    from tqdm import tqdm

    if mode not in EVAL_MODES:
        raise DatasetError(f"unknown mode {mode!r}; choose one of {', '.join(EVAL_MODES)}")
    references = [ex.reference(mode) for ex in examples]  # fails before any generation if one is missing
    lang = language or corpus_language(examples)
    gens: list[Generation] = []
    bar = tqdm(examples, desc=name, unit="dlg", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for ex in bar:
        gen = generate(ex)
        gens.append(gen)
        if len(gens) == min(ABORT_AFTER_FAILURES, len(examples)) and all(g.error for g in gens):
            bar.close()
            raise EvalError(f"{name}: the first {len(gens)} dialogue(s) all failed; last error: {gen.error}")
        secs = sum(g.seconds for g in gens)
        toks = sum(g.completion_tokens for g in gens)
        if secs > 0:
            bar.set_postfix_str(f"{secs / len(gens):.2f} s/dlg, {toks / secs:.1f} tok/s")
    bar.close()

    scores: CorpusScores = score_corpus(
        [g.text for g in gens], references, language=lang, embeddings=embeddings
    )
    results = [
        ExampleResult(
            id=ex.id,
            reference=ref,
            prediction=g.text,
            seconds=g.seconds,
            prompt_tokens=g.prompt_tokens,
            completion_tokens=g.completion_tokens,
            scores={k: round(v, 4) for k, v in s.items()},
            error=g.error,
            focus=ex.focus if mode == "aspect" else None,
        )
        for ex, ref, g, s in zip(examples, references, gens, scores.per_example, strict=True)
    ]
    total_s = sum(g.seconds for g in gens)
    completion = sum(g.completion_tokens for g in gens)
    prompt = sum(g.prompt_tokens for g in gens)
    timing = {
        "seconds_total": total_s,
        "seconds_per_dialogue": total_s / len(gens) if gens else 0.0,
        "prompt_tokens": float(prompt),
        "completion_tokens": float(completion),
        # Generated tokens over the whole wall time of the calls (prefill included): the rate a user sees.
        "tokens_per_s": completion / total_s if total_s > 0 else 0.0,
    }
    # Back-ends that time prefill and decode separately (llama.cpp) give the engine's own rates too;
    # prefill tokens are those really evaluated, i.e. after KV-cache reuse of a shared prompt prefix.
    for phase in ("prefill", "decode"):
        phase_tokens = sum(float(g.extra.get(f"{phase}_tokens", 0)) for g in gens)
        phase_secs = sum(float(g.extra.get(f"{phase}_seconds", 0.0)) for g in gens)
        if phase_tokens and phase_secs:
            timing[f"{phase}_tokens"] = phase_tokens
            timing[f"{phase}_tokens_per_s"] = phase_tokens / phase_secs
    return EvalRun(
        name=name,
        mode=mode,
        language=lang,
        aggregate=scores.aggregate,
        timing=timing,
        notes=scores.notes,
        results=results,
        info=dict(info or {}),
    )


# --------------------------------------------------------------------------- reports

_HEADLINE = (
    ("rouge1", "ROUGE-1"),
    ("rouge2", "ROUGE-2"),
    ("rougeL", "ROUGE-L"),
    ("rougeLsum", "ROUGE-Lsum"),
    ("bleu", "BLEU"),
    ("bertscore_f1", "BERTScore-F1"),
    ("embed_cosine", "Emb. cosine"),
)


def _cell(text: str, limit: int = 300) -> str:
    """A Markdown table cell: one line, pipes escaped, long text shortened."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def metrics_table(runs: Sequence[EvalRun]) -> str:
    """Side-by-side Markdown table of the headline metrics and speed of several runs."""
    keys = [(k, label) for k, label in _HEADLINE if any(k in r.aggregate for r in runs)]
    head = "| run | n | " + " | ".join(label for _, label in keys) + " | s/dialogue | tokens/s | failures |"
    sep = "|---|---:|" + "---:|" * len(keys) + "---:|---:|---:|"
    rows = [head, sep]
    for r in runs:
        vals = " | ".join(f"{r.aggregate[k]:.2f}" if k in r.aggregate else "–" for k, _ in keys)
        tps = f"{r.timing['tokens_per_s']:.1f}" if r.timing.get("tokens_per_s") else "–"
        rows.append(
            f"| {r.name} | {len(r.results)} | {vals} | {r.timing['seconds_per_dialogue']:.2f} | "
            f"{tps} | {r.failures} |"
        )
    return "\n".join(rows)


def markdown_report(run: EvalRun, *, title: str = "Evaluation report") -> str:
    lines = [f"# {title}", ""]
    for key, value in run.info.items():
        lines.append(f"- **{key}**: {value}")
    lines += [
        f"- **mode**: {run.mode}",
        f"- **language**: {run.language}",
        f"- **examples**: {len(run.results)} ({run.failures} failed)",
        "",
        "## Scores (points, 0–100)",
        "",
        metrics_table([run]),
        "",
        "## How it was scored",
        "",
    ]
    for key, value in run.notes.items():
        text = "; ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
        lines.append(f"- **{key}**: {text}")
    lines += [
        "",
        "## Per example",
        "",
        "| id | R-1 | R-2 | R-L | BLEU | s | prediction | reference |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in run.results:
        pred = f"**error:** {r.error}" if r.error else r.prediction
        s = r.scores
        lines.append(
            f"| {_cell(r.id, 40)} | {s.get('rouge1', 0):.1f} | {s.get('rouge2', 0):.1f} | "
            f"{s.get('rougeL', 0):.1f} | {s.get('bleu', 0):.1f} | {r.seconds:.2f} | "
            f"{_cell(pred)} | {_cell(r.reference)} |"
        )
    return "\n".join(lines) + "\n"


def write_reports(run: EvalRun, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` (everything, machine-readable) and ``report.md`` (for people)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(run.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown_report(run), encoding="utf-8")
    return json_path, md_path


# --------------------------------------------------------------------------- the CLI command


def backend_for(config: Any, backend: str | None, model: str | None) -> Any:
    """The configured back-end, with ``--backend`` / ``--model`` applied on top of config.toml."""
    from model.backends import get_backend

    mcfg = config.model
    if backend:
        mcfg = mcfg.model_copy(update={"backend": backend})
    if model:
        if mcfg.backend == "llama_cpp":
            mcfg = mcfg.model_copy(update={"llama_cpp": mcfg.llama_cpp.model_copy(update={"model": model})})
        elif mcfg.backend == "transformers":
            mcfg = mcfg.model_copy(
                update={"transformers": mcfg.transformers.model_copy(update={"path": model})}
            )
        else:
            mcfg = mcfg.model_copy(update={"openai": mcfg.openai.model_copy(update={"model": model})})
    return get_backend(config.model_copy(update={"model": mcfg}))


def build_summarizer(
    backend: Any,
    *,
    language: str,
    few_shot: bool,
    max_new_tokens: int = 1024,
    candidates: int = 1,
    candidate_temperature: float = 0.7,
) -> Any:
    """The production summarizer; ``few_shot=False`` drops the prompts' in-context examples, and
    ``candidates`` above 1 keeps the consensus of that many answers (``model.consensus``)."""
    from model.summarizer import Summarizer

    return Summarizer(
        backend,
        language=language,
        few_shot=few_shot,
        max_new_tokens=max_new_tokens,
        candidates=candidates,
        candidate_temperature=candidate_temperature,
    )


def default_out_dir(config: Any, data: Path, mode: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path(config.data_dir) / "eval" / f"{data.stem}-{mode}-{stamp}"


def command(
    data: Annotated[
        Path, typer.Option("--data", help="JSONL file: {id, dialogue, summary} or role/topic refs.")
    ],
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Score only the first N records.")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="overall | user | agent | all | aspect")] = "overall",
    backend: Annotated[
        str | None, typer.Option("--backend", help="llama_cpp | transformers | openai (default: config.toml)")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name or path for that back-end.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report directory (default: <data_dir>/eval/<file>-<mode>-<time>)."),
    ] = None,
    few_shot: Annotated[
        bool, typer.Option("--few-shot/--zero-shot", help="Use the prompts' in-context examples.")
    ] = True,
    language: Annotated[
        str | None,
        typer.Option("--language", help="Force the summary language (default: detected per dialogue)."),
    ] = None,
    embeddings: Annotated[
        bool, typer.Option("--embeddings/--no-embeddings", help="Compute embedding similarity (BERTScore).")
    ] = True,
    config_path: Annotated[Path | None, typer.Option("--config", help="config.toml to use.")] = None,
) -> None:
    """Score a back-end on a JSONL dataset: ROUGE, BLEU and embedding similarity, JSON + Markdown report."""
    from bot.config import load_config

    if mode not in EVAL_MODES:
        raise typer.BadParameter(f"{mode!r} is not one of {', '.join(EVAL_MODES)}", param_hint="--mode")
    if backend is not None and backend not in BACKENDS:
        raise typer.BadParameter(f"{backend!r} is not one of {', '.join(BACKENDS)}", param_hint="--backend")
    config = load_config(config_path)
    examples = load_examples(data, limit=limit, mode=mode)
    lang = language or corpus_language(examples)
    be = backend_for(config, backend, model)
    summarizer = build_summarizer(
        be,
        language=language or "auto",
        few_shot=few_shot,
        max_new_tokens=config.model.max_new_tokens,
        candidates=config.model.candidates,
        candidate_temperature=config.model.candidate_temperature,
    )
    info = {
        "data": str(data),
        "backend": getattr(be, "name", backend or config.model.backend),
        "model": getattr(be, "model_id", model or ""),
        "prompting": "few-shot (in-context examples)" if few_shot else "zero-shot",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.system()}, python {platform.python_version()}",
    }
    run = evaluate(
        examples,
        summarizer_generator(summarizer, mode),
        mode=mode,
        name=str(info["model"]),
        language=lang,
        embeddings=EmbeddingScorer() if embeddings else None,
        info=info,
    )
    out_dir = out or default_out_dir(config, data, mode)
    json_path, md_path = write_reports(run, out_dir)
    typer.echo(metrics_table([run]))
    typer.echo(f"\nreports: {json_path}\n         {md_path}")
    if run.failures:
        typer.echo(
            f"warning: {run.failures} of {len(run.results)} dialogues failed (see the report)", err=True
        )
