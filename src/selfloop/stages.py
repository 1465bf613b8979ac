"""The entry points DVC calls (``selfloop stage STEP [GENERATION] [--arm control]``): read
the run's ``params.json`` in the run directory, call the same core step the loop calls,
write the same files. ``dvc repro`` therefore replays a run step by step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from selfloop import loop
from selfloop.config import Params, saved_params
from selfloop.recording import write_history
from selfloop.records import read_json
from selfloop.versioning import PARAMS
from selfloop.workspace import Workspace

LOOP_STEPS = dict(loop.STEPS)
BASE_STEPS = ("init", "data", "bootstrap", "history")


def stage_params(workdir: Path) -> Params:
    """The run's parameters as DVC sees them (``dvc exp run -S`` edits this file)."""
    path = workdir / PARAMS
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a selfloop run directory (no {PARAMS})")
    data = read_json(path)
    data.setdefault("run", {})["workdir"] = str(workdir)
    return saved_params(data)


def _step(step: str, g: int | None, arm: str) -> Callable[[Params, Workspace, loop.Reporter], object]:
    if step in BASE_STEPS:
        if g is not None:
            raise ValueError(f"stage {step} takes no generation")
        return {"init": lambda p, ws, rep: loop.init_model(p, ws),
                "data": lambda p, ws, rep: loop.make_data(p, ws),
                "bootstrap": loop.bootstrap,
                "history": lambda p, ws, rep: write_history(ws, list(p.domain.levels))}[step]
    if g is None:
        raise ValueError(f"stage {step} needs a generation")
    if step == "evaluate":
        return lambda p, ws, rep: loop.evaluate(p, ws, g, arm, rep)
    if arm == "control":
        if step == "mix":
            return lambda p, ws, rep: loop.step_control_mix(p, ws, g, rep)
        if step == "train":
            return lambda p, ws, rep: loop.step_train(p, ws, g, rep, arm="control")
        raise ValueError(f"the control arm has no stage {step!r} (mix, train, evaluate)")
    if step not in LOOP_STEPS or g < 1:
        raise ValueError(f"unknown stage {step!r} for generation {g}; steps: {sorted(LOOP_STEPS)}")
    fn = LOOP_STEPS[step]
    return lambda p, ws, rep: fn(p, ws, g, rep)


def run_stage(step: str, g: int | None = None, arm: str = "loop", workdir: Path = Path(".")) -> None:
    """Run one step of a recorded run in ``workdir`` from its params.json."""
    fn = _step(step, g, arm)
    params = stage_params(workdir)
    loop.quiet_libraries()
    loop.set_threads(params.run.threads)
    fn(params, Workspace(workdir), loop.NullReporter())
