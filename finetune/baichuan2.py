"""Baichuan2-7B / -7B-Chat as a plain ``LlamaForCausalLM``: weights, tokenizer and chat format.

Baichuan2's own modelling code (``trust_remote_code``) does not run on transformers 5, but the 7B model
*is* a Llama with two differences, both removable at conversion time:

* **Packed attention projections.** ``self_attn.W_pack.weight`` is ``[3 * hidden, hidden]``: q, k and v
  stacked in that order. They are split into ``q_proj`` / ``k_proj`` / ``v_proj``. Baichuan2's rotary
  embedding is Llama's (``rotate_half`` on the two halves of each head, base 10000), so no row
  permutation is needed.
* **NormHead.** ``lm_head`` rows are L2-normalised at every forward pass (``F.normalize(weight)``).
  The converted checkpoint stores the normalised rows, computed in fp32, then cast back to the
  checkpoint's dtype; the plain Llama head then computes the same logits.

(The 13B model uses ALiBi instead of RoPE and is not a Llama; it is refused.)

**Tokenizer.** transformers' ``LlamaTokenizer`` built from Baichuan2's ``tokenizer.model`` gives
different ids (it prepends the "▁" prefix piece that this model was trained without). So the fast
tokenizer is built here from the SentencePiece model itself: its BPE vocabulary and the merges
implied by the piece scores, spaces escaped to "▁" with no dummy prefix, no normalisation (the
model's rule is ``identity``), digits split, byte fallback, and the 1,086 user-defined pieces as
added tokens. ``check_tokenizer`` compares ids with SentencePiece on a text and is run on conversion.

**Chat format.** A user turn is ``[195] + tokens``, an assistant turn ``[196] + tokens`` (ids 195 and
196 are the pieces ``<reserved_106>`` / ``<reserved_107>``), a system text comes first with no marker,
and a trained answer ends with ``</s>`` as in Baichuan2's own fine-tuning script. The chat template
below renders exactly that, so TRL and the transformers back-end use the format without custom code.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

USER_TOKEN_ID = 195
ASSISTANT_TOKEN_ID = 196
#: Baichuan2's chat format as a Jinja chat template (see the module docstring).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}<reserved_106>{{ message['content'] }}"
    "{% else %}<reserved_107>{{ message['content'] }}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<reserved_107>{% endif %}"
)
DEFAULT_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "baichuan2" / "tokenizer.model"
SHARD_BYTES = 4 * 1024**3


class Baichuan2Error(ValueError):
    """The checkpoint or tokenizer cannot be converted; the message names the file and the problem."""


# ------------------------------------------------------------------------------------------ tokenizer


def _proto(spm_path: Path) -> Any:
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb  # type: ignore[attr-defined]
    except ImportError as err:  # the generated module needs protobuf
        raise Baichuan2Error(
            f"reading {spm_path.name} needs protobuf: pip install protobuf ({err})"
        ) from None
    proto = pb.ModelProto()  # type: ignore[attr-defined]
    try:
        proto.ParseFromString(spm_path.read_bytes())
    except Exception as err:  # DecodeError: not a SentencePiece model
        raise Baichuan2Error(f"{spm_path} is not a SentencePiece model: {err}") from None
    return proto


def build_tokenizer(spm_path: str | Path) -> Any:
    """A ``PreTrainedTokenizerFast`` giving SentencePiece's ids for ``spm_path`` (module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.tokenization_utils_base import generate_merges

    path = Path(spm_path)
    if not path.is_file():
        raise Baichuan2Error(f"tokenizer model not found: {path}")
    proto = _proto(path)
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    if spec.model_type != 2:  # BPE
        raise Baichuan2Error(f"{path}: expected a BPE SentencePiece model (model_type {spec.model_type})")
    if norm.name not in ("identity", "") or norm.add_dummy_prefix or norm.remove_extra_whitespaces:
        raise Baichuan2Error(
            f"{path}: unsupported normalizer (rule {norm.name!r}, dummy prefix {norm.add_dummy_prefix}, "
            f"collapse spaces {norm.remove_extra_whitespaces}); this converter reproduces Baichuan2's only"
        )
    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
    normal = {piece: score for piece, score, kind in pieces if kind == 1}
    atomic = {piece for piece, _, kind in pieces if kind != 1}  # unk, control, user-defined, bytes
    merges = generate_merges(vocab, vocab_scores=normal, skip_tokens=atomic)
    unk = pieces[spec.unk_id][0]
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=spec.byte_fallback)
    )
    tok.normalizer = normalizers.Replace(" ", "▁")
    if spec.split_digits:
        tok.pre_tokenizer = pre_tokenizers.Digits(individual_digits=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    chat_ids = {USER_TOKEN_ID, ASSISTANT_TOKEN_ID}
    tok.add_tokens(
        [
            AddedToken(piece, normalized=False, special=(kind == 3 or i in chat_ids))
            for i, (piece, _, kind) in enumerate(pieces)
            if kind in (3, 4)
        ]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=pieces[spec.bos_id][0],
        eos_token=pieces[spec.eos_id][0],
        unk_token=unk,
        pad_token=unk,  # Baichuan2 pads with <unk> (id 0)
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def check_tokenizer(tokenizer: Any, spm_path: str | Path, texts: list[str]) -> None:
    """Raise ``Baichuan2Error`` naming the first text whose ids differ from SentencePiece's."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    for text in texts:
        want = sp.encode(text)
        got = tokenizer(text, add_special_tokens=False)["input_ids"]
        if got != want:
            raise Baichuan2Error(
                f"tokenizer ids differ from SentencePiece on {text[:40]!r}: {got[:12]} vs {want[:12]}"
            )


SAMPLE_TEXTS = [
    "Hello world!  Two  spaces, a\ttab and a\nnewline.",
    "用户询问订单为什么还没到。客服回答：明天送达（编号12345）。",
    "Prices: 3.14, 2,048 and 1e-9 -- +42 = ...",
    "emoji 🙂 and rare 𠀀 characters <SEP> <reserved_5> 《书》【注】",
    " leading space and trailing space ",
]


# ------------------------------------------------------------------------------------------ weights


def llama_config(config: dict[str, Any], dtype: str) -> Any:
    """The ``LlamaConfig`` equivalent of a Baichuan2-7B ``config.json``."""
    from transformers import LlamaConfig

    if config.get("num_hidden_layers", 32) > 32 and "alibi" in json.dumps(config).lower():
        raise Baichuan2Error("this looks like Baichuan2-13B (ALiBi), which is not a Llama; only 7B converts")
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        return LlamaConfig(
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=hidden // heads,
            max_position_embeddings=int(
                config.get("model_max_length") or config.get("max_position_embeddings", 4096)
            ),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            hidden_act=str(config.get("hidden_act", "silu")),
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            attention_bias=False,
            mlp_bias=False,
            tie_word_embeddings=False,
            bos_token_id=int(config.get("bos_token_id", 1)),
            eos_token_id=int(config.get("eos_token_id", 2)),
            pad_token_id=int(config.get("pad_token_id", 0)),
            dtype=dtype,
        )
    except KeyError as err:
        raise Baichuan2Error(f"config.json has no {err.args[0]!r}") from None


def _source_tensors(src: Path) -> Iterator[tuple[str, Any]]:
    """Every tensor of the checkpoint, one at a time (safetensors lazily; .bin memory-mapped)."""
    import torch

    files = sorted(src.glob("*.safetensors")) or sorted(src.glob("pytorch_model*.bin"))
    if not files:
        raise Baichuan2Error(f"{src}: no *.safetensors or pytorch_model*.bin weights")
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                    yield key, fh.get_tensor(key)
        else:
            state = torch.load(str(f), map_location="cpu", mmap=True, weights_only=True)
            for key in list(state):
                yield key, state.pop(key)


def convert_tensors(items: Iterator[tuple[str, Any]], hidden: int) -> Iterator[tuple[str, Any]]:
    """Baichuan2 tensor names and layout -> Llama's (the two changes of the module docstring)."""
    import torch

    for name, tensor in items:
        if name.endswith("self_attn.W_pack.weight"):
            if tensor.shape[0] != 3 * hidden:
                raise Baichuan2Error(f"{name}: expected {3 * hidden} rows (q, k, v), got {tensor.shape[0]}")
            prefix = name[: -len("W_pack.weight")]
            q, k, v = tensor.split(hidden, dim=0)
            yield prefix + "q_proj.weight", q.contiguous()
            yield prefix + "k_proj.weight", k.contiguous()
            yield prefix + "v_proj.weight", v.contiguous()
        elif name == "lm_head.weight":
            normed = torch.nn.functional.normalize(tensor.to(torch.float32), dim=-1)
            yield name, normed.to(tensor.dtype)
        elif "rotary_emb" in name:
            continue  # recomputed by Llama
        else:
            yield name, tensor


def convert_checkpoint(
    src: str | Path,
    out: str | Path,
    *,
    tokenizer_model: str | Path | None = None,
    shard_bytes: int = SHARD_BYTES,
) -> Path:
    """Convert a Baichuan2-7B(-Chat) directory into a Llama directory with our tokenizer and chat template.

    Tensors stream through one at a time, so a 15 GB checkpoint converts in little more memory than its
    largest tensor. ``tokenizer_model`` defaults to the checkpoint's own ``tokenizer.model``.
    """
    import torch
    from safetensors.torch import save_file

    src_dir, out_dir = Path(src), Path(out)
    cfg_path = src_dir / "config.json"
    if not cfg_path.is_file():
        raise Baichuan2Error(f"{src_dir}: no config.json")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    llama = llama_config(cfg, dtype)
    out_dir.mkdir(parents=True, exist_ok=True)

    shards: list[dict[str, Any]] = [{}]
    sizes = [0]
    seen: set[str] = set()
    for name, tensor in convert_tensors(_source_tensors(src_dir), llama.hidden_size):
        if shards[-1] and sizes[-1] + tensor.numel() * tensor.element_size() > shard_bytes:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = tensor.contiguous()
        sizes[-1] += tensor.numel() * tensor.element_size()
        seen.add(name)
    missing = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} - seen
    if missing:
        raise Baichuan2Error(f"{src_dir}: the checkpoint has no {', '.join(sorted(missing))}")
    index: dict[str, str] = {}
    for n, shard in enumerate(shards, start=1):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / fname), metadata={"format": "pt"})
        index.update({k: fname for k in shard})
    if len(shards) > 1:
        total = sum(sizes)
        (out_dir / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": index}, indent=2)
        )
    llama.architectures = ["LlamaForCausalLM"]
    llama.save_pretrained(out_dir)
    _write_generation_config(out_dir, src_dir)

    spm_path = Path(tokenizer_model) if tokenizer_model else src_dir / "tokenizer.model"
    if spm_path.is_file():
        tokenizer = build_tokenizer(spm_path)
        check_tokenizer(tokenizer, spm_path, SAMPLE_TEXTS)
        tokenizer.save_pretrained(out_dir)
        shutil.copyfile(spm_path, out_dir / "tokenizer.model")
    (out_dir / "chatsum-baichuan2.json").write_text(
        json.dumps(
            {
                "converted_from": str(src_dir),
                "changes": ["W_pack split into q_proj/k_proj/v_proj", "lm_head rows L2-normalised (fp32)"],
                "user_token_id": USER_TOKEN_ID,
                "assistant_token_id": ASSISTANT_TOKEN_ID,
                "torch": torch.__version__,
            },
            indent=2,
        )
        + "\n"
    )
    return out_dir


def _write_generation_config(out_dir: Path, src_dir: Path) -> None:
    """Greedy by default (chatsum decodes greedily); Baichuan2's user/assistant ids kept for reference."""
    from transformers import GenerationConfig

    extra: dict[str, Any] = {}
    src = src_dir / "generation_config.json"
    if src.is_file():
        data = json.loads(src.read_text(encoding="utf-8"))
        extra = {k: data[k] for k in ("user_token_id", "assistant_token_id") if k in data}
    gen = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, do_sample=False, **extra)
    gen.save_pretrained(out_dir)


def command(
    src: Annotated[Path, typer.Argument(help="Baichuan2-7B(-Chat) checkpoint directory.")],
    out: Annotated[Path, typer.Argument(help="Where to write the Llama-layout model.")],
    tokenizer_model: Annotated[
        Path | None,
        typer.Option("--tokenizer-model", help="SentencePiece model (default: SRC/tokenizer.model)."),
    ] = None,
) -> None:
    """Convert Baichuan2-7B(-Chat) to a LlamaForCausalLM directory (no remote code needed)."""
    path = convert_checkpoint(src, out, tokenizer_model=tokenizer_model)
    typer.echo(f"converted: {path}\nfine-tune it with: python -m finetune train --base-model {path} ...")
