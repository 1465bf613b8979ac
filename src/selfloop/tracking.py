"""MLflow tracking adapter: one parent run per loop, one nested run and one registered model
version per generation. MLflow is imported lazily, so importing this module costs nothing."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from selfloop.records import write_json

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PARAM_LEN = 500
BATCH = 100  # MLflow accepts at most 100 params or tags per log_batch call
CHAMPION = "champion"
STORE_DOWN = ("database is locked", "unable to open database", "Max retries exceeded", "Connection refused")


class TrackingError(RuntimeError):
    """The tracking store at a URI could not be reached or stayed locked."""


def default_tracking_uri(project_root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, else f"sqlite:///{project_root}/mlflow.db" (absolute path)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(project_root).resolve()}/mlflow.db"


@dataclass(frozen=True)
class DataInput:
    """A JSONL file a generation read, identified by DVC's md5 so MLflow's and DVC's digests match."""

    path: Path
    digest: str
    name: str
    context: str  # "training" | "evaluation"


def flatten(d: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested dict -> ('a.b.c', leaf) pairs."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from flatten(v, f"{key}.")
        else:
            yield key, v


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """Numeric leaves of a generation's metrics.json plus its score ('generation' is the step)."""
    out = {k: float(v) for k, v in flatten(metrics)
           if k != "generation" and isinstance(v, int | float) and not isinstance(v, bool)}
    score = score_of(metrics)
    return out if score is None else {**out, "score": score}


def score_of(metrics: dict) -> float | None:
    """Mean over levels of eval[level].greedy_acc; None when nothing was evaluated."""
    accs = [float(m["greedy_acc"]) for m in metrics.get("eval", {}).values() if "greedy_acc" in m]
    return sum(accs) / len(accs) if accs else None


def retry_locked(fn: Callable[[], T], uri: str, attempts: int = 3, backoff: float = 0.5) -> T:
    """Call ``fn``; retry with exponential backoff while sqlite says "database is locked" (MLflow already
    waits 20 s per statement), and turn lock and connection failures into a TrackingError naming ``uri``."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:
            text = str(e)
            if "database is locked" in text and i + 1 < attempts:
                time.sleep(backoff * 2**i)
            elif any(m in text for m in STORE_DOWN):
                raise TrackingError(f"MLflow tracking store {uri}: {text.splitlines()[0][:300]}") from e
            else:
                raise
    raise AssertionError("unreachable")


def _probe_http(uri: str, timeout: float = 5.0) -> None:
    """Fail fast on a dead tracking server (MLflow's own client retries for minutes)."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # something answered: let MLflow report what is wrong
    except OSError as e:
        raise TrackingError(f"MLflow tracking server {uri} unreachable: {e}") from e


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v) if isinstance(v, list | dict) else str(v)
    return s if len(s) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - 3] + "..."


class Tracker:
    """Logs a loop to MLflow: ``start_loop`` -> ``log_generation`` per generation -> ``finish``."""

    def __init__(self, uri: str, experiment: str, model_name: str, artifact_root: Path):
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.uri, self.model_name, self.parent_id = uri, model_name, None
        if uri.startswith(("http://", "https://")):
            _probe_http(uri)
        try:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            self.experiment_id = self._call(lambda: self._experiment(experiment, Path(artifact_root)))
        except (OSError, MlflowException) as e:
            raise TrackingError(f"MLflow tracking store {uri} unusable: {e}") from e

    def _call(self, fn: Callable[[], T]) -> T:
        return retry_locked(fn, self.uri)

    def _experiment(self, name: str, artifact_root: Path) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=str(artifact_root.resolve()))
        except MlflowException:  # created concurrently by another process
            return self.client.get_experiment_by_name(name).experiment_id

    def _log_batch(self, run_id: str, metrics: list | None = None, params: list | None = None,
                   tags: list | None = None) -> None:
        """One log_batch call per run (chunked only past MLflow's 100 params/tags limit)."""
        metrics, params, tags = metrics or [], params or [], tags or []
        n = max(len(params), len(tags), 1) if metrics or params or tags else 0
        for i in range(0, n, BATCH):
            self._call(lambda i=i: self.client.log_batch(run_id, metrics=metrics if i == 0 else [],
                                                         params=params[i:i + BATCH], tags=tags[i:i + BATCH]))

    def start_loop(self, state_file: Path, params: dict, tags: dict[str, str]) -> str:
        """Open (or reopen, if ``state_file`` names a live run) the parent run; log flattened params
        and tags; write the run and experiment ids to ``state_file`` atomically. Returns the run id."""
        from mlflow.entities import Param, RunTag

        state_file = Path(state_file)
        run = self._reopen(state_file)
        if run is None:
            run = self._call(lambda: self.client.create_run(
                self.experiment_id, run_name=f"loop-{state_file.parent.name}"))
        old = run.data.params
        new = {k: _param_value(v) for k, v in flatten(params)}
        for k in sorted(k for k in new.keys() & old.keys() if new[k] != old[k]):
            log.warning("param %s changed on resume (%r -> %r); keeping the logged value", k, old[k], new[k])
        self._log_batch(run.info.run_id,
                        params=[Param(k, v) for k, v in new.items() if k not in old],
                        tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.parent_id = run.info.run_id
        self._reap(tags.get("workdir"))
        write_json(state_file, {"run_id": self.parent_id, "experiment_id": self.experiment_id})
        return self.parent_id

    def _reap(self, workdir: str | None) -> None:
        """Runs an earlier process left RUNNING for the same run directory (killed, or
        replaced with --fresh) are marked KILLED, so run states tell the truth."""
        if not workdir or "'" in workdir:
            return
        stale = self._call(lambda: self.client.search_runs(
            [self.experiment_id], f"tags.workdir = '{workdir}' and attributes.status = 'RUNNING'"))
        for r in stale:
            if r.info.run_id != self.parent_id and r.data.tags.get("mlflow.parentRunId") != self.parent_id:
                self._call(lambda r=r: self.client.set_terminated(r.info.run_id, status="KILLED"))

    def _reopen(self, state_file: Path):
        """The earlier attempt's parent run, set back to RUNNING; None if there is none to reopen."""
        from mlflow.exceptions import MlflowException

        if not state_file.exists():
            return None
        run_id = json.loads(state_file.read_text())["run_id"]
        try:
            run = self._call(lambda: self.client.get_run(run_id))
        except MlflowException:
            log.warning("run %s from %s not in %s: starting a new run", run_id, state_file, self.uri)
            return None
        if run.info.lifecycle_stage != "active" or run.info.experiment_id != self.experiment_id:
            return None
        if run.info.status != "RUNNING":
            self._call(lambda: self.client.update_run(run_id, status="RUNNING"))
        return run

    def finish(self, status: str = "FINISHED", results: dict | None = None,
               run_id: str | None = None) -> None:
        """End the parent run (``run_id``, default: the one this tracker opened) with
        ``status``; log ``results`` as results.json if given."""
        run_id = run_id or self._parent()
        if results is not None:
            self._call(lambda: self.client.log_dict(run_id, results, "results.json"))
        self._call(lambda: self.client.set_terminated(run_id, status=status))

    def log_report(self, run_id: str, path: Path) -> None:
        """Attach the loop's HTML report (``selfloop report``) to its parent run ``run_id``
        as an artifact (replacing an earlier one of the same name)."""
        self._call(lambda: self.client.log_artifact(run_id, str(path)))

    def _parent(self) -> str:
        if self.parent_id is None:
            raise RuntimeError("Tracker.start_loop() was not called")
        return self.parent_id

    def log_generation(self, g: int, metrics: dict, checkpoint: Path, inputs: list[DataInput],
                       tags: dict[str, str]) -> int:
        """Log generation ``g`` as a nested run and register its checkpoint as a model version;
        idempotent per ``g``. Returns the version number."""
        parent = self._parent()
        runs = self._call(lambda: self.client.search_runs(
            [self.experiment_id],
            f"tags.mlflow.parentRunId = '{parent}' and tags.generation = '{g}'"))
        for r in runs:
            version = self._latest_version(f"run_id = '{r.info.run_id}'")
            if r.info.status == "FINISHED" and version is not None:
                return version
            if version is not None:  # an earlier attempt crashed after registering: complete it
                self._complete(r.info.run_id, g, metrics, version)
                return version
            if r.info.status != "FAILED":
                self._call(lambda r=r: self.client.set_terminated(r.info.run_id, status="FAILED"))
        return self._new_generation(g, metrics, Path(checkpoint), inputs, tags)

    def _new_generation(self, g: int, metrics: dict, checkpoint: Path, inputs: list[DataInput],
                        tags: dict[str, str]) -> int:
        from mlflow.entities import Metric, RunTag

        run = self._call(lambda: self.client.create_run(
            self.experiment_id, run_name=f"gen_{g:03d}",
            tags={"mlflow.parentRunId": self._parent(), "generation": str(g)}))
        run_id, now = run.info.run_id, int(time.time() * 1000)
        self._log_batch(run_id, metrics=[Metric(k, v, now, g) for k, v in numeric_metrics(metrics).items()],
                        tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self._call(lambda: self.client.log_artifacts(run_id, str(checkpoint), "checkpoint"))
        if inputs:
            self._call(lambda: self.client.log_inputs(run_id, [_dataset_input(i) for i in inputs]))
        score = score_of(metrics)
        version_tags = {"generation": str(g), "checkpoint_sha256": tags.get("checkpoint_sha256"),
                        "score": None if score is None else repr(score)}
        version = self._register(run_id, f"{run.info.artifact_uri}/checkpoint", version_tags)
        self._complete(run_id, g, metrics, version)
        return version

    def _complete(self, run_id: str, g: int, metrics: dict, version: int) -> None:
        """Parent-run curves, champion alias, then FINISHED: the steps after registration."""
        from mlflow.entities import Metric

        now, score = int(time.time() * 1000), score_of(metrics)
        curves = {k: v for k, v in numeric_metrics(metrics).items() if k.startswith("eval.") or k == "score"}
        self._log_batch(self._parent(), metrics=[Metric(k, v, now, g) for k, v in curves.items()])
        if score is not None:
            self._promote(version, score)
        self._call(lambda: self.client.set_terminated(run_id, status="FINISHED"))

    def _register(self, run_id: str, source: str, tags: dict[str, str | None]) -> int:
        from mlflow.exceptions import MlflowException

        try:
            self._call(lambda: self.client.create_registered_model(self.model_name))
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        tags = {k: v for k, v in tags.items() if v is not None}
        mv = self._call(lambda: self.client.create_model_version(
            self.model_name, source=source, run_id=run_id, tags=tags, await_creation_for=0))
        return int(mv.version)

    def _promote(self, version: int, score: float) -> None:
        """Move the champion alias to ``version`` when its score is strictly better."""
        from mlflow.exceptions import MlflowException

        try:
            current = self._call(lambda: self.client.get_model_version_by_alias(self.model_name, CHAMPION))
            best = float(current.tags.get("score") or "-inf")
        except MlflowException:
            best = float("-inf")
        if score > best:
            self._call(lambda: self.client.set_registered_model_alias(
                self.model_name, CHAMPION, str(version)))

    def _latest_version(self, where: str) -> int | None:
        mvs = self._call(lambda: self.client.search_model_versions(f"name = '{self.model_name}' and {where}"))
        return max((int(mv.version) for mv in mvs), default=None)

    def version_for_checkpoint(self, sha256: str) -> int | None:
        """The model version whose checkpoint_sha256 tag matches (for lineage)."""
        return self._latest_version(f"tags.checkpoint_sha256 = '{sha256}'")


def _dataset_input(i: DataInput):
    """A run input whose dataset digest is exactly DVC's md5 (the entity takes the digest as is)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    source = json.dumps({"uri": str(Path(i.path).resolve())})
    dataset = Dataset(name=i.name, digest=i.digest, source_type="local", source=source)
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, i.context)])
