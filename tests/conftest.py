import os
import signal

import pytest

from selfloop.terminate import EXIT_CODE

for k, v in {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false", "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
}.items():
    os.environ.setdefault(k, v)

TINY = [
    "run.iterations=1",
    "run.threads=1",
    "reference.train_per_level={3: 150, 4: 30}",
    "reference.heldout_per_level=12",
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "bootstrap.steps=30",
    "bootstrap.batch_size=16",
    "plan.problems=40",
    "plan.samples=4",
    "train.steps=10",
    "train.batch_size=16",
    "evaluate.pass_k=2",
    "track.mlflow=false",  # tests of tracking turn it on (a fresh MLflow store costs ~6 s)
    "measure.embeddings=false",  # loading the embedding model costs ~8 s per process
]


def _interrupt(*_) -> None:
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config) -> None:
    """SIGTERM (a CI timeout, `kill`) interrupts the session like Ctrl-C, so fixtures tear
    down: by default it ends pytest at once and the Prefect server a test started, or a run
    it spawned, is left running."""
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test inside ``selfloop.terminate.sigterm_raises`` (loop.run, the ablation's run_arms)
    turns SIGTERM into SystemExit(143) instead, which pytest would count as that test's
    failure and go on: stop the session after it, the same as an interrupt."""
    yield
    exc = call.excinfo.value if call.excinfo else None
    if isinstance(exc, SystemExit) and exc.code == EXIT_CODE:
        item.session.shouldstop = "SIGTERM"


@pytest.fixture
def tiny_overrides(tmp_path):
    return [*TINY, f"run.workdir={tmp_path / 'run'}"]
