"""Train: TRL SFTTrainer on a mix manifest, continuing from a checkpoint. The manifest
fixes every batch, so the sampler is sequential and the run is deterministic on CPU."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from selfloop import model as mdl
from selfloop.records import file_sha256


def mix_to_rows(mix: list[dict], by_id: dict[str, dict]) -> list[dict]:
    rows = []
    for m in mix:
        for i in (*m["reference"], *m["synthetic"]):
            r = by_id[i]
            rows.append({"prompt": r["prompt"], "completion": r["response"]})
    return rows


def sft(
    model, tokenizer, rows: list[dict], *, steps: int, batch_size: int, lr: float,
    scheduler: str, warmup_ratio: float, weight_decay: float, seed: int, max_length: int,
    progress: Callable[[int], None] | None = None,
):
    """Run SFT over ``rows`` in order (exactly ``steps`` batches) and return the model."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    if steps == 0:
        return model
    if len(rows) != steps * batch_size:
        raise ValueError(f"mix has {len(rows)} rows, expected {steps} x {batch_size}")

    class _Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if progress:
                progress(1)

    os.environ.setdefault("WANDB_DISABLED", "true")
    with tempfile.TemporaryDirectory(prefix="selfloop-sft-") as tmp:
        args = SFTConfig(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            lr_scheduler_type=scheduler,
            warmup_steps=int(warmup_ratio * steps),
            weight_decay=weight_decay,
            train_sampling_strategy="sequential",
            seed=seed,
            data_seed=seed,
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            max_length=max_length,
            packing=False,
            completion_only_loss=True,
            full_determinism=False,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[_Progress()],
        )
        trainer.train()
    model.eval()
    return model


def checkpoint_info(path: str | Path, model_version: str | None = None) -> dict:
    """What a record says about the checkpoint that generated it."""
    path = Path(path)
    weights = path / "model.safetensors"
    return {
        "path": str(path),
        "sha256": file_sha256(weights) if weights.exists() else None,
        "model_version": model_version,
    }


def save_checkpoint(model, tokenizer, path: str | Path, meta: dict) -> dict:
    mdl.save(model, tokenizer, path, meta)
    return checkpoint_info(path)
