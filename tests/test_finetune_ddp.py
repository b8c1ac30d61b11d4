"""``accelerate launch`` runs the unchanged ``python -m finetune train`` as DDP: 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.convert_gguf import hf_from_gguf
from finetune.data import finalize, records_from_file, write_dataset
from model.weights import resolve_model

pytestmark = pytest.mark.slow

DIALOGUES = [
    ("Anna: Lunch at 12?\nBen: Yes, usual place.", "Anna and Ben will have lunch at 12."),
    ("Carl: Got the keys?\nDana: Yes, on the desk.", "Dana left the keys on the desk for Carl."),
    ("Eve: Movie Friday?\nFinn: Sure, I'll book.", "Eve and Finn will see a movie on Friday."),
    ("Gus: Bus is late.\nHal: I'll wait for you.", "Gus's bus is late and Hal will wait."),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_cpu_processes_train_with_ddp(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which(
        "accelerate"
    )
    if accelerate is None:
        pytest.skip("the accelerate CLI is not installed")
    # The same cache as test_finetune_train.py, so the GGUF is converted once per session.
    cache = Path(
        os.environ.get("CHATSUM_TEST_CACHE") or tmp_path_factory.getbasetemp() / "chatsum-model-cache"
    )
    hf_from_gguf(resolve_model("smollm2-135m", cache), cache)  # before the launch: ranks find it converted

    src = tmp_path / "tiny.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "dialogue": d, "summary": s}) + "\n"
            for i, (d, s) in enumerate(DIALOGUES)
        ),
        encoding="utf-8",
    )
    write_dataset(finalize(records_from_file(src, "overall"), val_fraction=0.0), tmp_path / "data")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{cache}"\n', encoding="utf-8")

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", CHATSUM_DEBUG="1")
    cmd = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "finetune",
        "train",
        "--config",
        str(cfg),
        "--data",
        str(tmp_path / "data"),
        "--base-model",
        "smollm2-135m",
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "2",
        "--batch-size",
        "1",
        "--max-seq-len",
        "256",
        "--lora-r",
        "4",
        "--no-gradient-checkpointing",
        "--eval-limit",
        "0",
        "--no-progress",
        "--no-gguf",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    meta = json.loads((tmp_path / "run" / "adapter" / "chatsum_run.json").read_text())
    assert meta["hyperparameters"]["world_size"] == 2 and meta["hyperparameters"]["effective_batch"] == 2
    assert meta["metrics"]["global_step"] == 2
    # 2 processes x batch 1 x 2 steps = the 4 records once: a whole epoch, so the data was sharded.
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    assert history[-1]["epoch"] == 1.0
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert proc.stdout.count("run: ") == 1  # only the main process reports
