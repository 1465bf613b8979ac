"""Sampling behind a one-method protocol: the real one (batched, KV cache, seeded) and a
scripted fake for tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

Progress = Callable[[int], None]


class Generator(Protocol):
    def __call__(
        self, prompts: Sequence[str], n: int, temperature: float, top_p: float, seed: int,
        progress: Progress | None = None,
    ) -> list[list[str]]:
        """``n`` responses per prompt; temperature 0 means greedy (then n must be 1)."""
        ...


class HFGenerator:
    """Samples from a transformers causal LM in fixed-size batches with left padding.

    Determinism: the torch RNG is re-seeded per batch from ``seed`` and the batch index,
    so the same prompts, batch size and seed give the same samples on CPU. ``torch.manual_seed``
    seeds a GPU's generator too; the model's device is where the prompts go."""

    def __init__(self, model, tokenizer, batch_size: int = 512, max_new_tokens: int = 48) -> None:
        self.model, self.tok = model, tokenizer
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def __call__(self, prompts, n, temperature, top_p, seed, progress=None):
        import torch

        greedy = temperature == 0
        if greedy and n != 1:
            raise ValueError("greedy decoding gives one answer per prompt; use n=1")
        per_batch = max(1, self.batch_size // n)
        out: list[list[str]] = []
        self.tok.padding_side = "left"
        for b, start in enumerate(range(0, len(prompts), per_batch)):
            chunk = list(prompts[start : start + per_batch])
            enc = self.tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(self.model.device)
            torch.manual_seed(seed * 1_000_003 + b)
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc,
                    do_sample=not greedy,
                    temperature=temperature if not greedy else None,
                    top_p=top_p if not greedy else None,
                    top_k=0 if not greedy else None,
                    num_return_sequences=n,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=self.tok.pad_token_id,
                    eos_token_id=self.tok.eos_token_id,
                    use_cache=True,
                )
            texts = self.tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            out.extend(texts[i * n : (i + 1) * n] for i in range(len(chunk)))
            if progress:
                progress(len(chunk))
        return out


class FakeGenerator:
    """Answers from a function of the prompt (and sample index): for fast tests."""

    def __init__(self, answer: Callable[[str, int], str]) -> None:
        self.answer = answer

    def __call__(self, prompts, n, temperature, top_p, seed, progress=None):
        out = [[self.answer(p, i) for i in range(n)] for p in prompts]
        if progress:
            progress(len(prompts))
        return out
