"""The transformers back-end with the real SmolLM2-135M, loaded from its GGUF (slow to load; few tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="transformers is not installed: pip install 'chatsum[train]'")
pytest.importorskip("gguf", reason="loading GGUF files into transformers needs the gguf package")

from bot.config import parse_config
from model.backends import clear_backends, get_backend
from model.backends.base import Backend, BackendError, CopyGuard, Turn
from model.backends.transformers_backend import TransformersBackend
from model.weights import resolve_model

pytestmark = pytest.mark.slow

PROMPT = [Turn("system", "Be brief."), Turn("user", "Continue this list: 1, 2, 3, 4, 5, 6,")]


@pytest.fixture(scope="module")
def smol_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return resolve_model("smollm2-135m", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def smol(smol_gguf: Path) -> Iterator[TransformersBackend]:
    backend = TransformersBackend(smol_gguf, device="cpu")
    yield backend


def test_lazy_greedy_completion_from_a_gguf_file(smol: TransformersBackend) -> None:
    assert isinstance(smol, Backend)
    assert smol.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and not smol.loaded
    first = smol.complete(PROMPT, max_tokens=6)
    assert smol.loaded and smol.context_length == 8192  # read from the model config once loaded
    assert first.text.strip() and first.prompt_tokens > 10
    assert first.completion_tokens == 6 and first.finish_reason == "length"
    again = smol.complete(PROMPT, max_tokens=6)
    assert again.text == first.text  # greedy is deterministic
    attn = smol._model.config._attn_implementation
    assert attn == "sdpa"


def test_schema_is_not_enforced_but_reported(smol: TransformersBackend) -> None:
    out = smol.complete(PROMPT, max_tokens=2, json_schema={"type": "object"})
    assert out.extra["constrained"] is False and out.extra["schema_requested"] is True


def test_stop_strings(smol: TransformersBackend) -> None:
    full = smol.complete(PROMPT, max_tokens=8)
    assert "," in full.text  # precondition for the test to mean anything
    cut = smol.complete(PROMPT, max_tokens=8, stop=[","])
    assert cut.text == full.text.split(",")[0] and cut.finish_reason == "stop"


def test_count_tokens_matches_the_gguf_tokenizer(smol: TransformersBackend) -> None:
    assert smol.count_tokens("") == 0
    assert smol.count_tokens("hello world") == 2  # same count llama.cpp gives for this GGUF


def test_prompt_beyond_context_is_refused(smol_gguf: Path, smol: TransformersBackend) -> None:
    small = TransformersBackend(smol_gguf, device="cpu", context_length=64)
    # Share the loaded weights rather than loading them again.
    small._model, small._tokenizer, small._device = smol._model, smol._tokenizer, smol._device
    with pytest.raises(BackendError, match="exceeds the context"):
        small.complete([Turn("user", "word " * 80)], max_tokens=4)


def test_lora_adapter_is_applied(smol_gguf: Path, smol: TransformersBackend, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    # An adapter only depends on layer shapes: build it on a randomly initialised twin (no weight load).
    twin = AutoModelForCausalLM.from_config(smol._model.config)
    lora = peft.LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(twin, lora).save_pretrained(tmp_path / "adapter")

    tuned = TransformersBackend(smol_gguf, adapter=tmp_path / "adapter", device="cpu")
    assert tuned.model_id == "SmolLM2-135M-Instruct.Q4_1+adapter"
    out = tuned.complete(PROMPT, max_tokens=6)
    assert isinstance(tuned._model, peft.PeftModel)
    assert out.text != smol.complete(PROMPT, max_tokens=6).text  # random LoRA weights change the output


def test_nf4_4bit_loads_and_generates_on_cpu(smol_gguf: Path) -> None:
    try:
        import bitsandbytes as bnb
    except Exception as err:  # ImportError, or a broken native library
        pytest.skip(f"bitsandbytes unavailable ({err}); install it with pip install 'chatsum[gpu]'")
    backend = TransformersBackend(smol_gguf, load_in_4bit=True, device="cpu")
    out = backend.complete(PROMPT, max_tokens=3)
    layer = backend._model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and getattr(layer.weight, "quant_type", None) == "nf4"
    assert out.completion_tokens == 3 and out.text.strip() and out.extra["load_in_4bit"] is True


def test_bad_paths_fail_early_with_the_key(tmp_path: Path, smol_gguf: Path) -> None:
    with pytest.raises(BackendError, match=r"model\.transformers\.path is empty"):
        TransformersBackend("")
    with pytest.raises(BackendError, match=r"model\.transformers\.path not found"):
        TransformersBackend(tmp_path / "nowhere")
    with pytest.raises(BackendError, match=r"model\.transformers\.gguf_file not found"):
        TransformersBackend(tmp_path, gguf_file="absent.gguf")
    with pytest.raises(BackendError, match=r"model\.transformers\.adapter is not a directory"):
        TransformersBackend(smol_gguf, adapter=tmp_path / "no-adapter")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(BackendError, match="transformers could not load"):
        TransformersBackend(empty).count_tokens("hi")


def test_registry_maps_builtin_names_to_their_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSUM_DATA_DIR", str(tmp_path))
    clear_backends()
    cfg = parse_config({"model": {"backend": "transformers", "transformers": {"path": "smollm2-135m"}}})
    backend = get_backend(cfg)
    assert isinstance(backend, TransformersBackend) and not backend.loaded
    assert backend.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and backend.model_id == "smollm2-135m"
    assert get_backend(cfg) is backend
    clear_backends()


def test_copy_guard_keeps_the_first_lines_from_pasting_a_message(smol: TransformersBackend) -> None:
    message = "the deploy moves to next week because the payment tests still fail on staging"
    ask = f"Ann wrote: {message}\n\nRepeat Ann's message exactly."
    turns = [Turn("system", "Be brief."), Turn("user", ask)]
    guard = CopyGuard(sources=("unrelated text", message), lines=1, span=4)
    free, guarded = smol.complete_many([turns, turns], max_tokens=30, guards=[None, guard])
    runs = _runs(message, 4)
    assert _runs(free.text.split("\n")[0], 4) & runs, free.text  # left alone, it pastes
    first = guarded.text.split("\n")[0]
    assert len(first.split()) >= 4 and not _runs(first, 4) & runs, guarded.text


def _runs(text: str, n: int) -> set[tuple[str, ...]]:
    words = text.casefold().split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_complete_many_samples_each_request_from_its_own_seed(smol: TransformersBackend) -> None:
    turns = [Turn("system", "Be brief."), Turn("user", "Write one sentence about a cat that likes boxes.")]

    def draw() -> list[str]:
        out = smol.complete_many([turns] * 3, max_tokens=16, temperature=[0.0, 1.0, 1.0], seeds=[0, 5, 6])
        return [c.text for c in out]

    first = draw()
    assert draw() == first  # the same seeds, the same draws
    assert first[0] == smol.complete(turns, max_tokens=16).text  # temperature 0 is greedy
    assert first[1] != first[2], first
