"""Baichuan2-7B -> Llama: a tiny synthetic checkpoint in Baichuan2's packed layout, converted, must give
the logits of a plain-torch reference forward of the packed layout; the tokenizer must give
SentencePiece's ids; the chat template must give Baichuan2's chat ids (195/196)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from finetune.baichuan2 import (
    ASSISTANT_TOKEN_ID,
    USER_TOKEN_ID,
    Baichuan2Error,
    build_tokenizer,
    convert_checkpoint,
)

SHARED = Path(os.environ.get("CHATSUM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SPM = SHARED / "baichuan2" / "tokenizer.model"
needs_spm = pytest.mark.skipif(not SPM.is_file(), reason=f"{SPM} not present (shared Baichuan2 tokenizer)")

HIDDEN, HEADS, LAYERS, INTER, VOCAB, EPS = 32, 4, 2, 64, 125696, 1e-6


def _tiny_baichuan2(folder: Path, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with Baichuan2-7B's names and shapes (W_pack, NormHead), fp32."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    state = {
        "model.embed_tokens.weight": rnd(VOCAB, HIDDEN),
        "model.norm.weight": 1 + rnd(HIDDEN, scale=0.1),
        "lm_head.weight": rnd(VOCAB, HIDDEN, scale=3.0),
    }  # NormHead: rows far from unit norm
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        state.update(
            {
                p + "self_attn.W_pack.weight": rnd(3 * HIDDEN, HIDDEN),
                p + "self_attn.o_proj.weight": rnd(HIDDEN, HIDDEN),
                p + "mlp.gate_proj.weight": rnd(INTER, HIDDEN),
                p + "mlp.up_proj.weight": rnd(INTER, HIDDEN),
                p + "mlp.down_proj.weight": rnd(HIDDEN, INTER),
                p + "input_layernorm.weight": 1 + rnd(HIDDEN, scale=0.1),
                p + "post_attention_layernorm.weight": 1 + rnd(HIDDEN, scale=0.1),
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    config = {
        "architectures": ["BaichuanForCausalLM"],
        "model_type": "baichuan",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "vocab_size": VOCAB,
        "rms_norm_eps": EPS,
        "model_max_length": 4096,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(
        json.dumps({"user_token_id": 195, "assistant_token_id": 196})
    )
    return state


def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def reference_logits(
    state: dict[str, torch.Tensor], ids: torch.Tensor, *, norm_head: bool = True
) -> torch.Tensor:
    """Baichuan2-7B's forward pass written out from its modelling code: packed W_pack, RoPE (base 10000,
    rotate_half), causal softmax attention, SwiGLU, RMSNorm, and the NormHead normalising lm_head rows."""
    n, d = ids.shape[0], HIDDEN // HEADS
    x = state["model.embed_tokens.weight"][ids]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    angles = torch.outer(torch.arange(n).float(), inv_freq)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    mask = torch.full((n, n), float("-inf")).triu(1)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = _rms(x, state[p + "input_layernorm.weight"])
        packed = h @ state[p + "self_attn.W_pack.weight"].T  # [n, 3*hidden]
        q, k, v = (t.view(n, HEADS, d).transpose(0, 1) for t in packed.split(HIDDEN, dim=-1))
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, dim=-1)
        out = (att @ v).transpose(0, 1).reshape(n, HIDDEN)
        x = x + out @ state[p + "self_attn.o_proj.weight"].T
        h = _rms(x, state[p + "post_attention_layernorm.weight"])
        gate = torch.nn.functional.silu(h @ state[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ state[p + "mlp.up_proj.weight"].T)) @ state[p + "mlp.down_proj.weight"].T
    x = _rms(x, state["model.norm.weight"])
    head = state["lm_head.weight"]
    if norm_head:
        head = torch.nn.functional.normalize(head, dim=-1)  # Baichuan2's NormHead
    return x @ head.T


def test_converted_llama_gives_the_packed_layouts_logits(tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    state = _tiny_baichuan2(tmp_path / "baichuan2")
    out = convert_checkpoint(tmp_path / "baichuan2", tmp_path / "llama", tokenizer_model=tmp_path / "none")
    model = LlamaForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = torch.tensor([1, 195, 5000, 92, 17, 33000, 125000, 196, 4])
    with torch.no_grad():
        got = model(ids[None]).logits[0]
    want = reference_logits(state, ids)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    # The stored head rows are unit vectors; the packed q/k/v are split in order.
    from safetensors.torch import load_file

    conv = load_file(str(out / "model.safetensors"))
    assert torch.allclose(conv["lm_head.weight"].norm(dim=-1), torch.ones(VOCAB), atol=1e-5)
    assert torch.equal(
        conv["model.layers.1.self_attn.k_proj.weight"],
        state["model.layers.1.self_attn.W_pack.weight"][HIDDEN : 2 * HIDDEN],
    )
    assert "model.layers.0.self_attn.W_pack.weight" not in conv
    # A converter that forgot NormHead would be caught: those logits are far off.
    assert not torch.allclose(got, reference_logits(state, ids, norm_head=False), atol=1e-2)


def test_refuses_a_checkpoint_without_packed_rows(tmp_path: Path) -> None:
    state = _tiny_baichuan2(tmp_path / "bad")
    state["model.layers.0.self_attn.W_pack.weight"] = state["model.layers.0.self_attn.W_pack.weight"][:HIDDEN]
    save_file(state, str(tmp_path / "bad" / "model.safetensors"))
    with pytest.raises(Baichuan2Error, match=r"W_pack.weight: expected 96 rows"):
        convert_checkpoint(tmp_path / "bad", tmp_path / "out")


@needs_spm
def test_tokenizer_ids_equal_sentencepiece_and_chat_format_uses_195_196(tmp_path: Path) -> None:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    sp = spm.SentencePieceProcessor(model_file=str(SPM))
    built = build_tokenizer(SPM)
    built.save_pretrained(tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")  # what training and serving load
    texts = [
        "Hello world!  Two  spaces, a\ttab and a\nnewline.",
        " leading and trailing ",
        "用户询问订单为什么还没到。客服回答：明天送达（编号 12345）。",
        "价格是 3.14 元，2048 个，折扣 -20% = 更便宜！？",
        "emoji 🙂🎉 rare 𠀀 ǅ characters <SEP> <reserved_5> 《书》【注】```code```",
        "Anna: Lunch at 12?\nBen: Yes, usual place... OK!!",
        "ＦＵＬＬＷＩＤＴＨ ０１２ and\u00a0nbsp\u200bzero-width",
        "",
    ]
    for text in texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == sp.encode(text), text
        assert tok.decode(sp.encode(text)) == sp.decode(sp.encode(text))
    # Baichuan2's chat format: system text, then [195] + user tokens, then [196] to answer.
    messages = [{"role": "system", "content": "Summarize."}, {"role": "user", "content": "用户：你好"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    want = [*sp.encode("Summarize."), USER_TOKEN_ID, *sp.encode("用户：你好"), ASSISTANT_TOKEN_ID]
    assert list(ids) == want
    full = tok.apply_chat_template([*messages, {"role": "assistant", "content": "好"}], tokenize=True)
    full = full["input_ids"] if hasattr(full, "keys") else full
    assert list(full)[len(ids) :] == [
        *sp.encode("好"),
        2,
    ]  # the answer ends with </s>, as Baichuan2 trains it
    assert tok.pad_token_id == 0 and tok.eos_token_id == 2 and tok.bos_token_id == 1
