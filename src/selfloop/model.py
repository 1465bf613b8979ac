"""The default model (a GPT-2 built from config with a char-level tokenizer) and loading
of any local Hugging Face causal-LM directory. Safetensors only, never remote code."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
DONE_MARKER = "COMPLETE"  # written last into a checkpoint directory


def build_char_tokenizer(alphabet: str):
    """A WordLevel tokenizer over single characters, wrapped for transformers/TRL."""
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(alphabet))
    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, *chars])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    # Split into single characters and keep every one, spaces included.
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=PAD
    )


def unwritable(tokenizer, texts: list[str]) -> tuple[int, str, str | None]:
    """How many of ``texts`` the tokenizer can only encode with its unknown token, which
    characters it does not know, and the first such text. A model cannot learn to write what
    its tokenizer turns into padding (the default alphabet once lacked brackets)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return 0, "", None
    bad = [t for t in texts if unk in tokenizer(t, add_special_tokens=False)["input_ids"]]
    chars = sorted({c for t in bad for c in set(t)
                    if unk in tokenizer(c, add_special_tokens=False)["input_ids"]})
    return len(bad), "".join(chars), bad[0] if bad else None


def build_gpt2(tokenizer, n_layer: int, n_embd: int, n_head: int, n_positions: int, seed: int):
    """A randomly initialised GPT-2 sized for the tokenizer (seeded)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def load(path: str | Path, device: str = "cpu"):
    """Model and tokenizer from a local directory (safetensors only, no remote code), the
    model on ``device`` (``run.device``: 'cpu', 'cuda' or 'auto') in eval mode."""
    from transformers import AutoModelForCausalLM

    from selfloop.device import deterministic_gpu, resolve_device

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=True, trust_remote_code=False
    )
    device = resolve_device(device)
    if device != "cpu":
        deterministic_gpu()
    model.to(device).eval()
    return model, tok


def load_tokenizer(path: str | Path):
    """Only the tokenizer of a model directory (no weights), left-padding like ``load``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(path), trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def save(model, tokenizer, path: str | Path, meta: dict | None = None) -> None:
    """Save as safetensors; the completion marker is written last."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / DONE_MARKER).unlink(missing_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    (path / DONE_MARKER).write_text(json.dumps(meta or {}, sort_keys=True))


def is_complete(path: str | Path) -> bool:
    return (Path(path) / DONE_MARKER).exists()
