"""The evaluation harness: dataset readers, the scoring loop, reports, and ``python -m finetune eval``
end to end with the real SmolLM2-135M through llama.cpp. Fixtures are written here (the research
datasets may not be copied into the repository)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from finetune.cli import app
from finetune.datasets import DatasetError, load_examples, parse_dialogue
from finetune.eval import EvalError, Generation, evaluate, lead_n, write_reports

REPO = Path(__file__).resolve().parents[1]

SAMSUM_LIKE = [
    {
        "id": "t1",
        "dialogue": "Mia: are we still on for the cinema tonight?\nLeo: yes! 8 pm at the Rex\n"
        "Mia: great, I'll bring popcorn\nLeo: see you there",
        "summary": "Mia and Leo are going to the cinema at the Rex at 8 pm tonight. Mia will bring popcorn.",
    },
    {
        "id": "t2",
        "dialogue": "Ann: did anyone see my blue umbrella?\nTom: I think you left it in the car\n"
        "Ann: oh right, thanks",
        "summary": "Ann's blue umbrella is probably in the car.",
    },
    {
        "id": "t3",
        "dialogue": "Raj: the printer on floor 2 is broken again\nEve: I'll call the technician\n"
        "Raj: thanks, I need it by noon",
        "summary": "The printer on floor 2 is broken. Eve will call the technician; Raj needs it by noon.",
    },
]

CSDS_LIKE = [
    {
        "id": "c1",
        "turns": [
            {"role": "用户", "text": "你好，我的快递三天了还没到"},
            {"role": "客服", "text": "您好，请提供一下订单号"},
            {"role": "用户", "text": "订单号是12345"},
            {"role": "客服", "text": "已为您催促配送站，预计明天送达"},
        ],
        "user_summary": "用户询问快递为什么三天还没送到。",
        "agent_summary": "客服表示已催促配送站，预计明天送达。",
        "final_summary": "用户询问快递未到，客服已催促配送站，预计明天送达。",
    }
]


def _write_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- readers


def test_parse_dialogue_handles_continuations_orphans_and_fullwidth_colons() -> None:
    msgs = parse_dialogue(
        "a line before anyone speaks\nMia: first\nsecond line of Mia\n\nLeo：你好\nTom:\nLeo: ok"
    )
    assert [(m.ref, m.speaker, m.text) for m in msgs] == [
        (1, "unknown", "a line before anyone speaks"),
        (2, "Mia", "first\nsecond line of Mia"),
        (3, "Leo", "你好"),
        (4, "Leo", "ok"),  # Tom's empty turn is dropped, refs stay dense
    ]


def test_load_examples_reads_samsum_and_role_reference_shapes(tmp_path: Path) -> None:
    samsum = load_examples(_write_jsonl(tmp_path / "s.jsonl", SAMSUM_LIKE), limit=2)
    assert [e.id for e in samsum] == ["t1", "t2"]
    assert samsum[0].language == "en"
    assert samsum[0].messages[1].speaker == "Leo"
    assert samsum[0].reference("overall").startswith("Mia and Leo")

    (csds,) = load_examples(_write_jsonl(tmp_path / "c.jsonl", CSDS_LIKE), mode="agent")
    assert csds.language == "zh"
    assert [m.role for m in csds.messages] == ["user", "agent", "user", "agent"]
    assert csds.reference("user") == "用户询问快递为什么三天还没送到。"
    assert csds.reference("all") == csds.reference("overall") == CSDS_LIKE[0]["final_summary"]


def test_topic_records_are_scored_as_aspect_with_the_topic_as_focus(tmp_path: Path) -> None:
    rec = {"idx": 7, "topic": "物流进度", "summary": "用户询问物流。", "turns": CSDS_LIKE[0]["turns"]}
    (ex,) = load_examples(_write_jsonl(tmp_path / "t.jsonl", [rec]), mode="aspect")
    assert (ex.id, ex.focus, ex.references) == ("7", "物流进度", {"aspect": "用户询问物流。"})
    with pytest.raises(
        DatasetError, match=r"t\.jsonl:1: no reference for mode 'overall' \(this record has: aspect\)"
    ):
        load_examples(tmp_path / "t.jsonl", mode="overall")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"id": "x", "dialogue": "A: hi", "summary": "A says hi."}\n{not json',
            r"bad\.jsonl:2: not valid JSON",
        ),
        ('{"id": "x", "summary": "no dialogue"}', r"bad\.jsonl:1: no dialogue found"),
        ('{"id": "x", "dialogue": "A: hi"}', r"bad\.jsonl:1: no reference summary"),
        ('{"id": "x", "dialogue": "A: hi", "summary": 3}', r"bad\.jsonl:1: key 'summary': expected a string"),
        ('{"id": "x", "dialogue": "", "summary": "s"}', r"bad\.jsonl:1: the dialogue is empty"),
    ],
)
def test_bad_records_name_file_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_examples(path)


# --------------------------------------------------------------------------- scoring loop and reports


def test_evaluate_lead3_scores_and_writes_reports(tmp_path: Path) -> None:
    records = [
        {
            "id": "same",
            "dialogue": "A: one\nB: two\nA: three\nB: four",
            "summary": "A: one\nB: two\nA: three",
        },
        {"id": "other", "dialogue": "A: alpha\nB: beta", "summary": "Nothing shared at all"},
    ]
    examples = load_examples(_write_jsonl(tmp_path / "l.jsonl", records))
    run = evaluate(examples, lead_n(3), mode="overall", name="lead3", progress=False)
    by_id = {r.id: r for r in run.results}
    assert by_id["same"].prediction == "A: one\nB: two\nA: three"
    assert by_id["same"].scores["rouge1"] == pytest.approx(100.0)
    assert by_id["other"].scores["rouge1"] == pytest.approx(0.0)
    assert run.aggregate["rougeL"] == pytest.approx(50.0)

    json_path, md_path = write_reports(run, tmp_path / "out")
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert report["n"] == 2 and report["failures"] == 0
    assert report["examples"][1]["reference"] == "Nothing shared at all"
    md = md_path.read_text(encoding="utf-8")
    assert "| lead3 | 2 | 50.00 |" in md
    assert "A: one B: two A: three" in md  # per-example outputs, flattened into one table row


def test_evaluate_stops_when_the_first_dialogues_all_fail(tmp_path: Path) -> None:
    examples = load_examples(_write_jsonl(tmp_path / "s.jsonl", SAMSUM_LIKE))

    def broken(_: object) -> Generation:
        return Generation(text="", error="BackendError: server unreachable")

    with pytest.raises(EvalError, match=r"first 3 dialogue.*server unreachable"):
        evaluate(examples, broken, mode="overall", progress=False)


def test_one_failed_dialogue_is_reported_not_fatal(tmp_path: Path) -> None:
    examples = load_examples(_write_jsonl(tmp_path / "s.jsonl", SAMSUM_LIKE))
    lead = lead_n(1)

    def flaky(ex: object) -> Generation:
        return Generation(text="", error="SummaryError: bad JSON") if ex is examples[1] else lead(ex)  # type: ignore[arg-type]

    run = evaluate(examples, flaky, mode="overall", progress=False)
    assert run.failures == 1
    assert run.results[1].error == "SummaryError: bad JSON" and run.results[1].scores["rouge1"] == 0.0


# --------------------------------------------------------------------------- the command, end to end


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHATSUM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHATSUM_CONFIG", str(tmp_path / "no-config.toml"))
    (tmp_path / "no-config.toml").write_text("", encoding="utf-8")
    return tmp_path / "data"


@pytest.mark.slow
def test_eval_command_with_smollm2_writes_json_and_markdown(tmp_path: Path, data_dir: Path) -> None:
    data = _write_jsonl(tmp_path / "samsum_tiny.jsonl", SAMSUM_LIKE)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--data",
            str(data),
            "--limit",
            "2",
            "--backend",
            "llama_cpp",
            "--model",
            "smollm2-135m",
            "--out",
            str(out),
            "--zero-shot",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["n"] == 2 and report["mode"] == "overall" and report["language"] == "en"
    assert report["info"]["model"] == "smollm2-135m"
    assert report["info"]["prompting"] == "zero-shot"
    assert [e["id"] for e in report["examples"]] == ["t1", "t2"]
    for ex in report["examples"]:
        assert ex["error"] is None and ex["prediction"].strip()
        assert ex["completion_tokens"] > 0 and ex["seconds"] > 0
        assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "bertscore_f1", "embed_cosine"} <= set(
            ex["scores"]
        )
    agg = report["aggregate"]
    assert 0 <= agg["rougeL"] <= 100 and agg["bertscore_f1"] > 0
    assert report["timing"]["tokens_per_s"] > 0 and report["timing"]["seconds_per_dialogue"] > 0
    assert "all-MiniLM-L6-v2" in report["metrics"]["embedding"]["model"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| smollm2-135m | 2 |" in md and "## Per example" in md and "| t2 |" in md
    assert "ROUGE-1" in result.output and str(out / "report.json") in result.output


@pytest.mark.slow
def test_eval_command_role_mode_on_chinese_support_chat(tmp_path: Path, data_dir: Path) -> None:
    data = _write_jsonl(tmp_path / "csds_tiny.jsonl", CSDS_LIKE)
    out = tmp_path / "zh"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--data",
            str(data),
            "--mode",
            "agent",
            "--backend",
            "llama_cpp",
            "--model",
            "smollm2-135m",
            "--out",
            str(out),
            "--zero-shot",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["mode"] == "agent" and report["language"] == "zh"
    assert report["examples"][0]["reference"] == CSDS_LIKE[0]["agent_summary"]
    assert "tok:zh" in report["metrics"]["bleu"]
    assert "multilingual-e5-small" in report["metrics"]["embedding"]["model"]


def test_eval_command_errors_are_one_line_without_traceback(tmp_path: Path, data_dir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "dialogue": "A: hi", "summary": "s"}\n{oops\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CHATSUM_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "finetune", "eval", "--data", str(bad), "--backend", "llama_cpp"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == f"error: {bad}:2: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    )

    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--data",
            str(_write_jsonl(tmp_path / "s.jsonl", SAMSUM_LIKE)),
            "--model",
            str(tmp_path / "missing.gguf"),
        ],
    )
    assert result.exit_code == 1
    assert "model file not found" in result.output and "Traceback" not in result.output

    result = CliRunner().invoke(app, ["eval", "--data", str(tmp_path / "s.jsonl"), "--mode", "agent"])
    assert result.exit_code == 1 and "no reference for mode 'agent'" in result.output
