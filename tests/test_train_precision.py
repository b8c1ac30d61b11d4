"""``finetune.precision``: what ``auto`` picks, and the values refused before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from finetune.train import TrainError, cpu_has_bf16, pick_precision


def test_auto_on_a_cpu_is_bf16_autocast_exactly_when_the_cpu_has_bf16_instructions() -> None:
    assert pick_precision("auto", "cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    assert pick_precision("fp32", "cpu") == "fp32"
    assert pick_precision("bf16", "cpu") == "bf16"  # asked for: allowed, if slow where emulated


def test_fp16_on_a_cpu_and_unknown_values_are_refused_naming_the_key() -> None:
    with pytest.raises(TrainError, match=r'finetune\.precision = "fp16" needs a CUDA GPU'):
        pick_precision("fp16", "cpu")
    with pytest.raises(TrainError, match=r"finetune\.precision = 'fp8': allowed are auto, bf16, fp16, fp32"):
        pick_precision("fp8", "cpu")


def test_config_refuses_an_unknown_precision(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[finetune]\nprecision = "half"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"finetune\.precision"):
        load_config(path)
