"""Recording a loop as it goes: DVC versions each finished step's files, MLflow tracks the
loop (a parent run) and each generation (a nested run, a registered checkpoint), and a
history file feeds ``dvc plots``. The loop calls a ``Recorder`` at four points; the
Prefect flow wraps the same calls in tasks.

Records carry their generator checkpoint's content hash (sha256), not its MLflow model
version: the version number is assigned by the tracking server, so putting it in the
records would make a replay against another server write different bytes. The registry
keeps the hash as a version tag, and ``selfloop lineage`` joins the two."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from selfloop.config import Params, to_dict
from selfloop.records import file_sha256, read_json, write_json
from selfloop.versioning import Versioning, base_stages, control_stages, file_md5, generation_stages
from selfloop.workspace import Workspace


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
        self.dvc.record(base_stages(self.params.model.path))
        self._history(0, {"eval": base_eval["levels"]})
        return self._track(0, {"generation": 0, "arm": "loop", "eval": base_eval["levels"]},
                           self.ws.data / "reference.jsonl", tags)

    def generation(self, g: int, metrics: dict, tags: dict[str, str] | None = None) -> dict:
        """Version generation ``g``'s files; track its metrics and checkpoint."""
        self.dvc.record(generation_stages(g))
        self._history(g, metrics)
        return self._track(g, metrics, self.ws.gen(g) / "mix.jsonl", tags)

    def close(self, results: dict, control_generations: int, status: str = "FINISHED") -> None:
        """Version the control arm, push the run to the DVC remote, end the MLflow run."""
        if status == "FINISHED":
            stages: dict = {}
            for g in range(1, control_generations + 1):
                stages.update(control_stages(g))
            if stages:
                self.dvc.record(stages)
            if self.params.track.dvc_push and self.dvc.enabled and self.dvc.has_remote():
                self.dvc.push()
        if self.tracker:
            self.tracker.finish(status, results)

    # ------------------------------------------------------------------ helpers
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
        info["model_version"] = self.tracker.log_generation(g, metrics, ckpt, inputs, run_tags)
        return info

    def _history(self, g: int, metrics: dict) -> None:
        """history.json: one row per generation for ``dvc plots`` (git-tracked, not a stage output)."""
        path = self.ws.root / "history.json"
        rows = [r for r in (read_json(path) if path.exists() else []) if r["generation"] < g]
        row = {"generation": g, **{f"L{lv}": metrics["eval"][str(lv)]["greedy_acc"] for lv in self.levels}}
        row["acceptance"] = metrics.get("verify", {}).get("acceptance_rate", 0.0)
        write_json(path, [*rows, row])


def model_versions(ws: Workspace):
    """Checkpoint sha256 -> MLflow model version for a run that was tracked (it has an
    mlflow.json), else None. Used by ``selfloop lineage``."""
    from selfloop.config import params_from_dict

    if not (ws.root / "mlflow.json").exists() or not (ws.root / "params.json").exists():
        return None
    tracker = Recorder(params_from_dict(read_json(ws.root / "params.json")), ws).tracker
    return tracker.version_for_checkpoint if tracker else None
