"""Train: TRL SFTTrainer on a mix manifest, continuing from a checkpoint. The manifest
fixes every batch, so the sampler is sequential and the run is deterministic on CPU."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from selfloop import model as mdl
from selfloop.records import file_sha256


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenize_example(tokenizer, prompt: str, completion: str, max_length: int) -> dict:
    """input_ids and labels (-100 on the prompt), as TRL builds them for prompt/completion
    data: the completion starts where prompt and prompt+completion tokenizations diverge."""
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    if not ids or ids[-1] != tokenizer.eos_token_id:
        ids = [*ids, tokenizer.eos_token_id]
    start = _common_prefix(p_ids, ids)
    ids = ids[:max_length]
    labels = [-100] * min(start, len(ids)) + ids[start:]
    return {"input_ids": ids, "labels": labels}


def mix_to_rows(mix: list[dict], by_id: dict[str, dict], tokenizer, max_length: int) -> dict:
    """The manifest's batches in order, as a column dict ready for SFTTrainer. Each distinct
    example is tokenized once (TRL's own per-row preparation took ~25 s for 128k rows)."""
    cache: dict[str, dict] = {}
    cols: dict[str, list] = {"input_ids": [], "labels": []}
    for m in mix:
        for i in (*m["reference"], *m["synthetic"]):
            if i not in cache:
                r = by_id[i]
                cache[i] = tokenize_example(tokenizer, r["prompt"], r["response"], max_length)
            cols["input_ids"].append(cache[i]["input_ids"])
            cols["labels"].append(cache[i]["labels"])
    return cols


class WeightAverage:
    """Exponential moving average of a model's parameters: the first ``update`` copies them,
    each later one moves the average ``1 - decay`` of the way to them; ``apply`` writes the
    average into the model.

    The update is torch's EMA (``torch.optim.swa_utils.get_ema_multi_avg_fn``: a foreach
    lerp), so a float32 model gets the same bits as with ``AveragedModel``. That class is not
    used because it deep-copies the whole module and keeps the average in the model's dtype:
    in bfloat16 a 1% step toward weights one rounding unit away rounds back to nothing, so a
    user's bf16 model would keep its first step's weights. Here the average is float32 and
    holds parameters only (a tied weight once): 4 bytes per parameter."""

    def __init__(self, model, decay: float):
        self.params = list(model.parameters())
        self.decay = decay
        self.average: list | None = None

    def update(self) -> None:
        import torch

        with torch.no_grad():
            current = [p.detach().float() for p in self.params]
            if self.average is None:
                self.average = [c.clone() for c in current]
            else:
                torch._foreach_lerp_(self.average, current, 1 - self.decay)

    def apply(self) -> None:
        import torch

        if self.average is None:
            return
        with torch.no_grad():
            for p, a in zip(self.params, self.average, strict=True):
                p.copy_(a)


def sft(
    model, tokenizer, rows: dict, *, steps: int, batch_size: int, lr: float,
    scheduler: str, warmup_ratio: float, weight_decay: float, seed: int, max_length: int,
    progress: Callable[[int], None] | None = None, ema: float = 0.0,
):
    """Run SFT over ``rows`` in order (exactly ``steps`` batches) and return the model. With
    ``ema`` > 0 the model ends with the exponential moving average of its weights over the
    call's steps (``WeightAverage``), not the last step's."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    if steps == 0:
        return model
    if len(rows["input_ids"]) != steps * batch_size:
        raise ValueError(f"mix has {len(rows['input_ids'])} rows, expected {steps} x {batch_size}")

    averaged = WeightAverage(model, ema) if ema else None

    class _Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if averaged is not None:
                averaged.update()
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
            use_cpu=model.device.type == "cpu",  # else the first visible GPU, where mdl.load put it
            bf16=False,
            fp16=False,
            activation_checkpointing=False,  # TRL turns it on by default: pure cost for tiny models
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            max_length=max_length,
            packing=False,
            completion_only_loss=True,
            full_determinism=False,
            dataset_kwargs={"skip_prepare_dataset": True},
        )
        # One device, one process: with several GPUs visible the Trainer would wrap the model in
        # DataParallel and take per_device_train_batch_size from each, while the manifest fixes
        # every batch. _n_gpu is what the Trainer itself sets to 1 for a model-parallel model.
        args._n_gpu = min(args.n_gpu, 1)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict(rows),
            processing_class=tokenizer,
            callbacks=[_Progress()],
        )
        trainer.remove_callback(PrinterCallback)  # it prints a metrics dict; the caller reports
        trainer.train()
    if averaged is not None:
        averaged.apply()
    model.eval()
    return model


def checkpoint_info(path: str | Path, root: str | Path | None = None) -> dict:
    """What a record says about the checkpoint that generated it (path relative to ``root``,
    so the same run gives the same records wherever its directory is). The content hash is
    the key to the checkpoint's MLflow model version (a tag on the version; see
    selfloop.recording for why the version number itself is not in the record)."""
    path = Path(path)
    weights = path / "model.safetensors"
    return {
        "path": str(path.relative_to(root)) if root else str(path),
        "sha256": file_sha256(weights) if weights.exists() else None,
    }


def save_checkpoint(model, tokenizer, path: str | Path, meta: dict) -> dict:
    mdl.save(model, tokenizer, path, meta)
    return checkpoint_info(path)
