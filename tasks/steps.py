"""One Prefect task per step. Each is a few lines around a core call from
``selfloop.loop``: files in, files out, small stats back. Retries only on I/O errors (a
verification or validation failure is final), timeouts; no task tags (see ``_step``); no
result caching: the run directory is the state and ``--resume`` the recovery."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from selfloop import loop
from selfloop.config import Params
from selfloop.recording import Recorder
from selfloop.workspace import Workspace

_reporter: loop.Reporter = loop.NullReporter()


def use_reporter(rep: loop.Reporter) -> None:
    """Progress display for a flow run in a terminal (set by ``python -m flows.loop``)."""
    global _reporter
    _reporter = rep


def io_error_only(task, task_run, state) -> bool:
    """Retry a failed task only when the failure was an I/O error (disk, lock, filesystem)."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


def _step(name: str, timeout: int | None):
    # No task-run tags, on purpose. Prefect 3.8 asks the server for tag concurrency slots
    # before every tagged task run (even with no limits defined); on a SQLite-backed server
    # that UPDATE often meets "database is locked", the server answers 503 and the client
    # backs off a fixed ~2 s: measured as a 2 s gap before most tasks (+21-26% on the default
    # run). Runs are tagged at the deployment (prefect.yaml); tasks are told apart by name.
    return task(name=name, timeout_seconds=timeout, retries=2, retry_delay_seconds=5,
                retry_condition_fn=io_error_only, cache_policy=NO_CACHE, persist_result=False)


def _call(fn, params: Params, workdir: str, *args, **kw) -> dict:
    t = time.perf_counter()
    out = fn(params, Workspace(Path(workdir)), *args, _reporter, **kw)
    get_run_logger().info("%s done in %.1fs", fn.__name__, time.perf_counter() - t)
    return out or {}


@_step("prepare", 1800)
def prepare(params: Params, workdir: str) -> None:
    _call(loop.prepare, params, workdir)


@_step("bootstrap", 7200)
def bootstrap(params: Params, workdir: str) -> dict:
    return _call(loop.base, params, workdir)


@_step("plan", 300)
def plan(params: Params, workdir: str, g: int) -> dict:
    return _call(loop.step_plan, params, workdir, g)


@_step("generate", 7200)
def generate(params: Params, workdir: str, g: int) -> dict:
    return _call(loop.step_generate, params, workdir, g)


@_step("verify", 3600)
def verify(params: Params, workdir: str, g: int) -> dict:
    return _call(loop.step_verify, params, workdir, g)


@_step("curate", 3600)
def curate(params: Params, workdir: str, g: int) -> dict:
    return _call(loop.step_curate, params, workdir, g)


@_step("train", 7200)
def train(params: Params, workdir: str, g: int) -> dict:
    return _call(loop.step_train, params, workdir, g)


@_step("evaluate", 3600)
def evaluate(params: Params, workdir: str, g: int) -> dict:
    return _call(loop.step_evaluate, params, workdir, g)


@_step("record-open", None)
def record_open(params: Params, workdir: str, tags: dict[str, str]) -> None:
    Recorder(params, Workspace(Path(workdir))).open(tags)


@_step("record-base", None)
def record_base(params: Params, workdir: str, base_eval: dict, tags: dict[str, str]) -> dict:
    return Recorder(params, Workspace(Path(workdir))).base(base_eval, tags)


@_step("record-generation", None)
def record_generation(params: Params, workdir: str, g: int, metrics: dict, tags: dict[str, str]) -> dict:
    return Recorder(params, Workspace(Path(workdir))).generation(g, metrics, tags)


@_step("record-close", 3600)
def record_close(params: Params, workdir: str, results: dict, control_generations: int, status: str) -> None:
    Recorder(params, Workspace(Path(workdir))).close(results, control_generations, status)


# record-open/base/generation run in a worker thread (submitted, see TaskRecorder), where
# Prefect cannot enforce a timeout (it only warns that it cannot): none is set. DVC's own
# lock wait (versioning.LOCK_WAIT_S) and MLflow's retries bound them instead.


class TaskRecorder:
    """The loop's recorder with each call a task (so versioning and tracking show in the UI),
    tagging MLflow runs with the flow run's id.

    Recording runs beside the loop, not in its way: each call is submitted to the flow's
    task runner (a thread; DVC itself runs as a subprocess) and waits only for the previous
    recording, so generation g is committed and logged while generation g+1 computes, on
    the core the loop leaves idle. A failed recording stops the loop at its next call, and
    ``close`` waits for every recording before the last one."""

    def __init__(self, params: Params, workdir: str, flow_run_id: str) -> None:
        self.params, self.workdir, self.tags = params, workdir, {"prefect_flow_run_id": flow_run_id}
        self._pending: list = []

    def _submit(self, record_task, *args) -> None:
        self._raise_failed(wait=False)
        last = self._pending[-1:]
        self._pending.append(record_task.submit(self.params, self.workdir, *args, self.tags, wait_for=last))

    def _raise_failed(self, wait: bool) -> None:
        """Re-raise the first failed recording (its own error, e.g. DvcError); with ``wait``,
        first wait for all of them."""
        for fut in self._pending:
            if wait:
                fut.wait()
            if fut.state.is_failed() or fut.state.is_crashed():
                fut.result()  # raises the task's exception

    def open(self) -> None:
        self._submit(record_open)

    def base(self, base_eval: dict) -> None:
        self._submit(record_base, base_eval)

    def generation(self, g: int, metrics: dict) -> None:
        self._submit(record_generation, g, metrics)

    def close(self, results: dict, control_generations: int, status: str = "FINISHED") -> None:
        try:
            self._raise_failed(wait=True)
        except Exception:
            if status == "FINISHED":
                raise
        record_close(self.params, self.workdir, results, control_generations, status)


@_step("measure", 3600)
def measure(params: Params, workdir: str, g: int) -> dict:
    return _call(loop.step_measure, params, workdir, g)


@_step("monitor", 600)
def monitor(params: Params, workdir: str, g: int) -> dict:
    return _call(loop.step_monitor, params, workdir, g)


STEPS = (("plan", plan), ("generate", generate), ("verify", verify), ("curate", curate),
         ("train", train), ("evaluate", evaluate), ("measure", measure), ("monitor", monitor))
