"""Recording a loop as it goes: DVC versions each finished generation's files, MLflow
tracks the loop (a parent run) and each generation (a nested run, a registered
checkpoint), and a history file feeds ``dvc plots``. The loop calls a ``Recorder`` at four points; the
Prefect flow wraps the same calls in tasks.

Records carry their generator checkpoint's content hash (sha256), not its MLflow model
version: the version number is assigned by the tracking server, so putting it in the
records would make a replay against another server write different bytes. The registry
keeps the hash as a version tag, and ``selfloop lineage`` joins the two."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from pathlib import Path

from selfloop.config import Params, to_dict
from selfloop.monitor import flags
from selfloop.records import file_sha256, read_json, write_json
from selfloop.versioning import (
    DvcError,
    Versioning,
    base_stages,
    control_stages,
    file_md5,
    generation_stages,
    history_stage,
)
from selfloop.workspace import Workspace

log = logging.getLogger("selfloop")


def project_root(ws: Workspace) -> Path:
    """The project a run belongs to: its DVC repository, else its git repository, else
    the run directory itself. MLflow's default store lives there."""
    from selfloop.versioning import find_root

    start = ws.root.resolve()
    root = find_root(start)
    if root:
        return root
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return start


def git_commit(root: Path) -> str:
    """The commit the code ran at (suffixed ``-dirty`` with uncommitted changes), or ""."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def _tracker(uri: str, experiment: str, model_name: str, artifact_root: str):
    from selfloop.tracking import Tracker

    return Tracker(uri, experiment, model_name, Path(artifact_root))


class Recorder:
    """DVC + MLflow + history for one run directory; each part off when not configured."""

    def __init__(self, params: Params, ws: Workspace) -> None:
        self.params, self.ws = params, ws
        self.levels = tuple(params.domain.levels)
        self.dvc = Versioning(ws.root, params.track.dvc, self.levels)
        self.root = project_root(ws)

    def describe(self) -> str:
        """One line on where this run is versioned and tracked."""
        from selfloop.tracking import default_tracking_uri

        dvc = (f"DVC in {self.dvc.root} ({self.dvc.pipeline.relative_to(self.dvc.root)})" if self.dvc.enabled
               else "DVC off" + ("" if not self.params.track.dvc else " (not inside a DVC repository)"))
        mlf = f"MLflow at {default_tracking_uri(self.root)}" if self.params.track.mlflow else "MLflow off"
        gates = "great-expectations gates on" if self.params.run.gates else "gates OFF"
        return f"{dvc}; {mlf}; {gates}"

    # ------------------------------------------------------------------ mlflow
    @property
    def tracker(self):
        t = self.params.track
        if not t.mlflow:
            return None
        from selfloop.tracking import default_tracking_uri

        name = t.model_name or f"selfloop-{self.params.domain.name}"
        return _tracker(default_tracking_uri(self.root), t.experiment, name, str(self.root / "mlartifacts"))

    def _tags(self, extra: dict[str, str] | None) -> dict[str, str]:
        tags = {"git_commit": git_commit(self.root), "workdir": str(self.ws.root.resolve())}
        return {**tags, **(extra or {})}

    # ------------------------------------------------------------------ the four points
    def open(self, tags: dict[str, str] | None = None) -> None:
        """Start (or, on resume, reopen) the loop's MLflow run."""
        if self.tracker:
            self.tracker.start_loop(self.ws.root / "mlflow.json", to_dict(self.params), self._tags(tags))

    def base(self, base_eval: dict, tags: dict[str, str] | None = None) -> dict:
        """Version the data and base model; register the base checkpoint."""
        write_history(self.ws, list(self.levels), last=0)
        self.dvc.record({**base_stages(self._model_dep()), **history_stage(0)})
        return self._track(0, {"generation": 0, "arm": "loop", "eval": base_eval["levels"]},
                           self.ws.data / "reference.jsonl", tags)

    def generation(self, g: int, metrics: dict, tags: dict[str, str] | None = None) -> dict:
        """Version generation ``g``'s files; track its metrics and checkpoint."""
        write_history(self.ws, list(self.levels), last=g)
        start = self.ws.start_generation(g, self.params.train.start)
        self.dvc.record({**generation_stages(g, self.ws.source_generation(g), start), **history_stage(g)})
        return self._track(g, metrics, self.ws.gen(g) / "mix.jsonl", tags)

    def close(self, results: dict, control_generations: int, status: str = "FINISHED") -> None:
        """Version the control arm, push the run to the DVC remote, write the run's report
        (report.html, attached to the MLflow run), end the MLflow run.
        (``control_generations`` is what the loop reported; every complete control
        generation is versioned, and incomplete ones left by a stopped control process are
        removed, so nothing unversioned is left behind. A report that fails only warns.)"""
        report = None
        if status == "FINISHED":
            self._record_control()
            if self.params.track.dvc_push and self.dvc.enabled and self.dvc.has_remote():
                try:
                    self.dvc.push()
                except DvcError as e:  # the run itself is complete and recorded
                    log.warning("the run is recorded but not pushed (%s); push it later with "
                                "`dvc push %s`", str(e).splitlines()[0], self.dvc.pipeline)
            try:
                from selfloop.report import write_report

                report = write_report(self.ws.root)
            except Exception as e:  # the run itself is complete and recorded
                log.warning("the run finished but its report was not written (%s: %s); write it with "
                            "`selfloop report %s`", type(e).__name__, e, self.ws.root)
        state = self.ws.root / "mlflow.json"
        if self.tracker and state.exists():  # only the loop run this directory opened
            run_id = read_json(state)["run_id"]
            if report is not None:
                try:
                    self.tracker.log_report(run_id, report)
                except Exception as e:
                    log.warning("report %s not attached to MLflow run %s (%s: %s)", report, run_id,
                                type(e).__name__, e)
            self.tracker.finish(status, results if status == "FINISHED" else None, run_id=run_id)

    def _record_control(self) -> None:
        stages: dict = {}
        g = 1
        while (self.ws.gen(g, "control") / "metrics.json").exists():
            stages.update(control_stages(g, self.ws.start_generation(g, self.params.train.start, "control")))
            g += 1
        while self.ws.gen(g, "control").exists():  # a stopped control process's partial work
            shutil.rmtree(self.ws.gen(g, "control"))
            g += 1
        if stages:
            self.dvc.record(stages)

    # ------------------------------------------------------------------ helpers
    def _model_dep(self) -> str:
        """A local starting model as a DVC dependency: relative to the run directory when it
        lies in the repository (so clones replay it), else absolute (an external one)."""
        path = self.params.model.path
        if not path or not self.dvc.enabled:
            return path
        p = Path(path).resolve()
        if p.is_relative_to(self.dvc.root):
            return os.path.relpath(p, self.ws.root.resolve())
        return str(p)

    def _track(self, g: int, metrics: dict, train_file: Path, tags: dict[str, str] | None) -> dict:
        info = {"dvc_hash": self.dvc.generation_hash(g)}
        if not self.tracker:
            return info
        from selfloop.tracking import DataInput

        inputs = [DataInput(p, file_md5(p), str(p.relative_to(self.ws.root)), ctx)
                  for p, ctx in ((train_file, "training"), (self.ws.heldout, "evaluation"))]
        ckpt = self.ws.model(g)
        sha = file_sha256(ckpt / "model.safetensors")  # the hash records carry (train.checkpoint_info)
        run_tags = {**self._tags(tags), "dvc_hash": info["dvc_hash"], "checkpoint_sha256": sha}
        if "monitor" in metrics:  # the collapse monitor's decisions, readable in the run list
            shown = [f"{d['action']}: {d['reason']}" for d in metrics["monitor"]]
            run_tags["monitor"] = "; ".join(shown) or "-"
            metrics = {**metrics, "monitor_flags": len(flags(metrics["monitor"]))}
        info["model_version"] = self.tracker.log_generation(g, metrics, ckpt, inputs, run_tags)
        return info



# history.json columns beyond the n-gram Vendi ones: column -> (diversity.json set, metric),
# each the mean over the levels that have the set (``monitor.mean_over_levels``)
HISTORY_MEANS = {
    "entropy_samples": ("samples", "template_entropy"),
    "entropy_accepted": ("accepted", "template_entropy"),
    "entropy_probe_well_formed": ("probe_well_formed", "template_entropy"),
    "kl_samples": ("samples", "template_kl_vs_reference"),
    "kl_accepted": ("accepted", "template_kl_vs_reference"),
    "mmd_samples": ("samples", "mmd_vs_reference"),
    "mmd_accepted": ("accepted", "mmd_vs_reference"),
    "vendi_embedding_samples": ("samples", "vendi_embedding"),
    "vendi_embedding_accepted": ("accepted", "vendi_embedding"),
    "mean_logprob_samples": ("samples", "mean_logprob"),
    "ways_samples": ("samples", "distinct_per_solved"),
    "ways_accepted": ("accepted", "distinct_per_solved"),
}


def write_history(ws: Workspace, levels: list[int], last: int | None = None) -> list[dict]:
    """history.json: one row per finished generation up to ``last`` (default: all of them)
    for ``dvc plots`` (the ``history`` stage): held-out greedy accuracy per level, answers
    accepted, pool size, the training mix's shares by origin (reference data, this
    generation's accepted answers, earlier generations' answers), mean n-gram Vendi of the
    model's samples, of their well-formed ones, of the accepted answers, of the accepted
    answers at a fixed size (``monitor.equal_n_series``) and of the well-formed held-out
    probe samples, and the other means of ``HISTORY_MEANS`` (template entropy, divergence
    from the reference data, embedding Vendi, the samples' mean log-probability, distinct
    answers per solved problem). Recording
    names ``last``: it may run while the next generation is being written."""
    from selfloop.monitor import equal_n_series, mean_over_levels, mean_vendi
    from selfloop.records import iter_jsonl
    from selfloop.steps.curate import origin_shares

    def rounded(v: float | None) -> float | None:
        return None if v is None else round(v, 6)

    rows, g, divs = [], 0, []
    while (ws.gen(g) / "eval.json").exists() and (last is None or g <= last):
        ev = read_json(ws.gen(g) / "eval.json")["levels"]
        row = {"generation": g, **{f"L{lv}": ev[str(lv)]["greedy_acc"] for lv in levels},
               "accepted": 0, "pool": 0,  # the base model trained on reference data only
               "reference_share": 1.0, "mix_this_generation": 0.0, "mix_earlier_generations": 0.0,
               "vendi_samples": None, "vendi_samples_well_formed": None,
               "vendi_accepted": None, "vendi_probe_well_formed": None, "vendi_accepted_equal_n": None,
               **dict.fromkeys(HISTORY_MEANS)}
        if g > 0:
            newest = {r["id"] for r in iter_jsonl(ws.gen(g) / "accepted.jsonl")}
            row["accepted"] = len(newest)
            row["pool"] = sum(1 for _ in iter_jsonl(ws.gen(g) / "pool.jsonl"))
            mix = ws.gen(g) / "mix.jsonl"
            shares = origin_shares(iter_jsonl(mix), newest) if mix.exists() else None
            for col, key in (("reference_share", "reference"), ("mix_this_generation", "this_generation"),
                             ("mix_earlier_generations", "earlier")):
                row[col] = rounded(shares[key] if shares else None)
            div = read_json(ws.gen(g) / "diversity.json") if (ws.gen(g) / "diversity.json").exists() else None
            divs.append(div)
            for kind in ("samples", "samples_well_formed", "accepted", "probe_well_formed"):
                row[f"vendi_{kind}"] = rounded(mean_vendi(div, kind) if div else None)
            for col, (kind, metric) in HISTORY_MEANS.items():
                row[col] = rounded(mean_over_levels(div, kind, metric) if div else None)
        rows.append(row)
        g += 1
    for row, v in zip(rows[1:], equal_n_series(divs), strict=True):
        row["vendi_accepted_equal_n"] = rounded(v)
    write_json(ws.root / "history.json", rows)
    return rows


def model_versions(ws: Workspace):
    """Checkpoint sha256 -> MLflow model version for a run that was tracked (it has an
    mlflow.json), else None. Used by ``selfloop lineage``."""
    from selfloop.config import saved_params

    if not (ws.root / "mlflow.json").exists() or not (ws.root / "params.json").exists():
        return None
    tracker = Recorder(saved_params(read_json(ws.root / "params.json")), ws).tracker
    return tracker.version_for_checkpoint if tracker else None
