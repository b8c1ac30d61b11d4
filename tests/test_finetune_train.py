"""LoRA + NEFTune training on the smallest real model (SmolLM2-135M from its GGUF), export and serving.

One short training run (3 optimizer steps, then 1 more resumed from its checkpoint) is shared by the
tests of this module; sequences are kept around 150 tokens because the suite runs on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from export_fixtures import tg_msg, write_telegram_chat
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTTrainer
from typer.testing import CliRunner

from finetune.cli import app
from finetune.convert_gguf import hf_from_gguf
from finetune.data import InstructionRecord, records_from_file, render_record
from finetune.export import export_run
from finetune.train import (
    TrainSettings,
    load_tokenizer,
    pick_precision,
    prepare,
    read_metadata,
    resolve_base,
    train,
)
from model.weights import BUILTIN_MODELS, resolve_model

pytestmark = pytest.mark.slow

DIALOGUES = [
    ("Anna: Lunch at 12?\nBen: Yes, usual place.", "Anna and Ben will have lunch at 12."),
    ("Carl: Got the keys?\nDana: Yes, on the desk.", "Dana left the keys on the desk for Carl."),
    ("Eve: Movie Friday?\nFinn: Sure, I'll book.", "Eve and Finn will see a movie on Friday."),
    ("Gus: Bus is late.\nHal: I'll wait for you.", "Gus's bus is late and Hal will wait."),
]


def _cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One conversion per test session (shared by this module and the DDP test); CHATSUM_TEST_CACHE
    keeps it across sessions."""
    env = os.environ.get("CHATSUM_TEST_CACHE")
    return Path(env) if env else tmp_path_factory.getbasetemp() / "chatsum-model-cache"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = _cache_root(tmp_path_factory)
    hf_from_gguf(resolve_model("smollm2-135m", cache), cache)
    return cache


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[InstructionRecord]:
    path = tmp_path_factory.mktemp("data") / "tiny.jsonl"
    rows = [{"id": f"d{i}", "dialogue": d, "summary": s} for i, (d, s) in enumerate(DIALOGUES)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return records_from_file(path, "overall", source="tiny")


class EmbeddingProbe(TrainerCallback):  # type: ignore[misc]
    """Records, for every forward pass during training, whether the embedding module was in training
    mode and how far its output was from the clean embedding lookup. Registered at train begin, i.e.
    after the Trainer attached NEFTune's hook, so it sees the noised output."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, float, float]] = []  # (training, max |noise|, NEFTune's bound)
        self.autocast: list[bool] = []  # training passes: was bf16 autocast on around the model
        self.handle: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        emb = model.get_input_embeddings()

        def hook(module: Any, inputs: Any, output: Any) -> None:
            clean = torch.nn.functional.embedding(inputs[0], module.weight)
            bound = 5.0 / (output.shape[1] * output.shape[2]) ** 0.5
            self.seen.append((module.training, float((output - clean).abs().max()), bound))
            if module.training:
                self.autocast.append(
                    torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
                )

        self.handle = emb.register_forward_hook(hook)

    def on_train_end(self, *args: Any, **kw: Any) -> None:
        self.handle.remove()


SETTINGS = dict(
    base_model="smollm2-135m",
    lora_r=8,
    lora_alpha=16,
    learning_rate=2e-3,
    batch_size=2,
    max_seq_len=256,
    save_steps=3,
    eval_steps=2,
    neftune_noise_alpha=5.0,
    seed=3,
)


@pytest.fixture(scope="module")
def run(
    cache_dir: Path, records: list[InstructionRecord], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("run")
    probe = EmbeddingProbe()
    first = train(
        TrainSettings(**SETTINGS, max_steps=3),
        records,
        records[:1],
        out,
        cache_dir=cache_dir,
        data_hash={"train": "abc"},
        callbacks=[probe],
        progress=False,
        log=lambda s: None,
    )
    adapter_after_3 = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    resumed = train(  # the last step only; no evaluation, no checkpointing of activations: cheaper
        TrainSettings(**{**SETTINGS, "gradient_checkpointing": False}, max_steps=4),
        records,
        [],
        out,
        cache_dir=cache_dir,
        resume=True,
        progress=False,
        log=lambda s: None,
    )
    return {"dir": out, "first": first, "resumed": resumed, "probe": probe, "adapter3": adapter_after_3}


def test_a_few_steps_change_the_adapter_and_lower_the_loss(run: dict[str, Any]) -> None:
    lora_b = {k: v for k, v in run["adapter3"].items() if "lora_B" in k}
    assert lora_b and all(v.abs().max() > 0 for v in lora_b.values())  # peft starts lora_B at zero
    m = run["first"].metadata["metrics"]
    assert m["global_step"] == 3
    assert m["eval_loss_after"] < m["eval_loss_before"]


def test_neftune_noise_in_training_and_none_in_evaluation(run: dict[str, Any]) -> None:
    seen = run["probe"].seen
    train_passes = [s for s in seen if s[0]]
    eval_passes = [s for s in seen if not s[0]]
    assert train_passes and eval_passes  # eval_steps=2 evaluates while NEFTune's hook is attached
    assert all(0 < noise <= bound + 1e-6 for _, noise, bound in train_passes)
    assert all(noise == 0 for _, noise, _ in eval_passes)


def test_resume_continues_from_the_checkpoint(run: dict[str, Any]) -> None:
    assert (run["dir"] / "checkpoints" / "checkpoint-3").is_dir()
    assert run["resumed"].global_step == 4
    steps = [h["step"] for h in run["resumed"].log_history if "loss" in h]
    assert steps[-1] == 4 and 3 in steps  # the history of the first 3 steps came from the checkpoint


def test_metadata_curve_and_dry_run(
    run: dict[str, Any], cache_dir: Path, records: list[InstructionRecord]
) -> None:
    meta = read_metadata(run["dir"] / "adapter")
    assert meta["base_model"]["id"] == "smollm2-135m"
    assert meta["base_model"]["sha256"] == BUILTIN_MODELS["smollm2-135m"].sha256
    assert meta["hyperparameters"]["neftune_noise_alpha"] == 5.0 and meta["hyperparameters"]["lora_r"] == 8
    bf16 = pick_precision("auto", "cpu") == "bf16"
    assert meta["precision"] == ("bf16 autocast over fp32 weights" if bf16 else "fp32")
    assert meta["prompt_version"]
    # The Trainer really ran the forward passes of training under bf16 autocast (or not at all).
    assert run["probe"].autocast and set(run["probe"].autocast) == {bf16}
    assert {"torch", "transformers", "peft", "trl"} <= set(meta["libraries"])
    assert run["first"].metadata["data"]["sha256"] == {"train": "abc"}
    assert (run["dir"] / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # The records exactly as the model sees them: SmolLM2's chat template around the bot's prompt.
    tok = load_tokenizer(resolve_base("smollm2-135m", cache_dir))
    head, trained, n = render_record(records[0], tok)
    assert head.startswith("<|im_start|>system\nYou summarize chats.") and head.endswith(
        "<|im_start|>assistant\n"
    )
    assert trained == records[0].completion + "<|im_end|>\n" and n is not None and n < 256


def test_export_gguf_serves_the_fine_tuned_model_from_one_config_line(
    run: dict[str, Any], tmp_path: Path
) -> None:
    from model.backends.llama_cpp_backend import open_llama

    result = export_run(run["dir"], merge=True, gguf_type="f16", log=lambda s: None)
    gguf = result["gguf"]
    assert gguf is not None and gguf.is_file() and (result["merged"] / "model.safetensors").is_file()
    line = next(x for x in result["instructions"].splitlines() if x.startswith("model = "))
    assert line == f'model = "{gguf.resolve()}"'

    # The GGUF computes what base + adapter computes (the tensors went back with the right layout).
    meta = read_metadata(run["dir"] / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(str(result["merged"]), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(result["merged"]))
    ids = tok("Anna: Lunch at 12?\nBen: Yes, usual place.", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        want = merged(torch.tensor([ids])).logits[0].numpy()
    diffs = {}
    for name, path in (("export", gguf), ("base", meta["base_model"]["gguf"])):
        llm = open_llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=2)
        llm.eval(ids)
        diffs[name] = float(np.abs(np.array(llm.scores[: len(ids)]) - want).max())
        llm.close()
    assert diffs["export"] < 0.2 < diffs["base"]

    # One line in config.toml switches `chatsum summarize` to it, and its summary differs from the base's.
    chat = write_telegram_chat(
        tmp_path / "export",
        [
            tg_msg(1, "Lunch at 12 tomorrow?", sender="Anna", sender_id="user1"),
            tg_msg(2, "Yes, the usual place. I'll book a table.", sender="Ben", sender_id="user2"),
            tg_msg(3, "Great, see you there", sender="Anna", sender_id="user1"),
        ],
    )
    outputs = {}
    for name, model_line in (("tuned", line), ("base", 'model = "smollm2-135m"')):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(
            f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[model]\nmax_new_tokens = 64\n'
            f"[model.llama_cpp]\nn_ctx = 4096\n{model_line}\n",
            encoding="utf-8",
        )
        from bot.cli import app as chatsum

        res = CliRunner().invoke(
            chatsum, ["--config", str(cfg), "summarize", str(chat), "--mode", "overall", "--format", "json"]
        )
        assert res.exit_code == 0, res.output
        outputs[name] = json.loads(res.stdout[res.stdout.index("{") :])
    assert outputs["tuned"]["meta"]["model_id"] != outputs["base"]["meta"]["model_id"]
    assert outputs["tuned"]["overall"] != outputs["base"]["overall"]


def worst_relative_error(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """The largest ``|g - ref| / |ref|`` (Frobenius norms) over the parameters."""
    return max(float((grads[n] - ref).norm() / ref.norm()) for n, ref in reference.items())


def test_response_only_loss_and_lora_gradients_equal_the_full_logits_computation(
    cache_dir: Path, records: list[InstructionRecord], tmp_path: Path
) -> None:
    """The trainer's loss projects only the labelled (summary) positions through the LM head; on a real
    right-padded batch of two lengths it equals, with every LoRA gradient, both the full-logits cross
    entropy and TRL's own fused head over all positions, with gradient accumulation's normalisation."""
    prep = prepare(
        TrainSettings(**{**SETTINGS, "gradient_checkpointing": False}, max_steps=1),
        records,
        [],
        tmp_path,
        cache_dir=cache_dir,
        progress=False,
        log=lambda s: None,
    )
    trainer, model = prep.trainer, prep.trainer.model
    torch.manual_seed(1)
    for name, param in model.named_parameters():  # as after some training: lora_A gets gradients too
        if "lora_B" in name:
            param.data.normal_(0.0, 0.02)
    rows = sorted(trainer.train_dataset, key=lambda r: len(r["input_ids"]))
    batch = trainer._prepare_inputs(trainer.data_collator([rows[0], rows[-1]]))
    labels = batch["labels"]
    assert (batch["attention_mask"] == 0).any()  # padding is in play
    scored = int((labels[:, 1:] != -100).sum())
    assert 0 < scored < labels[:, 1:].numel() // 3  # the summary is a small part of each sequence
    num_items = torch.tensor(2 * scored)  # as if a second micro-batch of the step had as many tokens

    head_rows: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, inputs, output: head_rows.append(inputs[0].shape[:-1].numel())
    )

    def full_logits_loss() -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
        ) / num_items

    def loss_and_grads(compute: Any) -> tuple[float, dict[str, torch.Tensor]]:
        model.train()  # LoRA dropout on: the same seed draws the same masks in each computation
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        loss = compute()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return float(loss.detach()), grads

    def ours_loss(inputs: dict[str, Any]) -> torch.Tensor:
        return trainer.compute_loss(model, dict(inputs), num_items_in_batch=num_items)

    ours, ours_g = loss_and_grads(lambda: ours_loss(batch))
    assert head_rows == [scored]  # the LM head saw the labelled positions and nothing else
    full, full_g = loss_and_grads(full_logits_loss)
    trl, trl_g = loss_and_grads(
        lambda: SFTTrainer.compute_loss(trainer, model, dict(batch), num_items_in_batch=num_items)
    )
    hook.remove()
    assert ours == pytest.approx(full, rel=1e-5) and ours == pytest.approx(trl, rel=1e-5)
    assert set(ours_g) == set(full_g) == set(trl_g) and all(g.norm() > 0 for g in full_g.values())
    # Measured: 0 against the full logits (the same rows through the same ops), 1.5e-4 against TRL's online
    # softmax over 32k-token vocabulary chunks; a label shift off by one position would differ by ~1
    assert worst_relative_error(ours_g, full_g) < 1e-4
    assert worst_relative_error(ours_g, trl_g) < 1e-3

    # A micro-batch without any label (possible with gradient accumulation) adds exactly nothing.
    empty = {**batch, "labels": torch.full_like(labels, -100)}
    nothing, nothing_g = loss_and_grads(lambda: ours_loss(empty))
    assert nothing == 0.0 and all(float(g.abs().max()) == 0.0 for g in nothing_g.values())


def test_train_command_refuses_unknown_recipe_and_missing_data(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", str(tmp_path), "--recipe", "no-such-recipe"])
    assert res.exit_code == 1 and "no recipe 'no-such-recipe'" in res.output
    res = runner.invoke(app, ["train", "--data", str(tmp_path)])
    assert res.exit_code == 1 and "no train.jsonl" in res.output
