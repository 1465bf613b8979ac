"""DVC versioning: every run directory is a DVC pipeline of its own.

``<workdir>/dvc.yaml`` gets one stage per step and generation (e.g. ``gen_003_curate``) once
the loop has finished that generation (the control arm's at the end of the run);
``<workdir>/params.json`` (the run's resolved parameters) is the params file the stages
depend on; ``dvc commit`` records the files the loop already wrote into
``<workdir>/dvc.lock``, so after a run ``dvc status`` is clean and ``dvc repro`` has nothing
to do. Each stage's command is ``selfloop stage ...`` (run in the workdir), so ``dvc repro
--force`` replays the run from its params, and ``dvc exp run -S
params.json:curate.cap_per_problem=1`` re-runs only the stages that depend on that setting.

Stages are written by the loop rather than declared once with ``foreach``: a run may stop
early (plateau, monitor) and a stage must never be declared whose outputs do not exist, or
``dvc status`` would never be clean.

By default DVC fails at once when another DVC command holds its lock, so every DVC command
selfloop runs passes ``--wait-for-lock``, goes through one flock per repository (selfloop's
own commands take turns) and retries while DVC reports an output path busy."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from selfloop.records import file_digest, write_text

PARAMS = "params.json"
LOCK_WAIT_S = 1800  # how long a loop waits for another loop's DVC command
BUSY_RETRIES = 10  # DVC reporting an output path busy
# Not versioned: the run lock, the MLflow run id, and the report (derived, rebuilt by
# `selfloop report`, carries the time it was written).
LOCAL_FILES = ("/.lock", "/mlflow.json", "/report.html")


class DvcError(RuntimeError):
    """A DVC command failed; the message carries its output."""


class RunDirIgnored(DvcError):
    """The run directory is one git ignores, so DVC could not record it: found before any
    work, so there is nothing to resume (the command line exits 2, as for other bad input)."""


# --------------------------------------------------------------------------- stages


def _stage(cmd: str, deps: list[str], params: list[str], outs: list[str]) -> dict:
    stage: dict = {"cmd": cmd}
    if deps:
        stage["deps"] = deps
    stage["params"] = [{PARAMS: params}]
    stage["outs"] = outs
    return stage


def _outs(stage: dict) -> set[str]:
    """The paths a stage declares as outputs (a plain path, or a one-key dict with options)."""
    return {o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])}


def _model(g: int, arm: str) -> str:
    return f"gen_{g:03d}/model" if arm == "loop" or g == 0 else f"{arm}/gen_{g:03d}/model"


# The parameters each step reads (DVC re-runs a stage when one of them changes). The seed,
# the thread count and the device change a model step's results, so they are parameters too
# (_RUN). Steps that gate a batch also read what the great-expectations suites read
# (validate.checks_for).
_RUN = ["run.seed", "run.threads", "run.device"]
_GATE = ["domain", "reference", "verify", "generate", "run.gates"]
_EVAL = ["evaluate", "domain", "generate", "verify", *_RUN]


REF, HELD = "data/reference.jsonl", "data/heldout.jsonl"


def _replicated(params: list[str], step: str) -> list[str]:
    """A generation's step parameters plus ``run.replicate``, which shifts every seed of
    generations 1 and on (verify draws nothing at random)."""
    return params if step == "verify" else [*params, "run.replicate"]


def base_stages(model_path: str = "") -> dict[str, dict]:
    """The starting checkpoint, reference and held-out data, the base model and its evaluation."""
    return {
        "init": _stage("selfloop stage init", [model_path] if model_path else [],
                       ["model", "domain.name", "run.seed"], ["init_model"]),
        "data": _stage("selfloop stage data", ["init_model"], [*_GATE, "run.seed"],
                       [REF, HELD, "data/validation/reference.json"]),
        "base_train": _stage("selfloop stage bootstrap", ["init_model", REF],
                             ["bootstrap", *_RUN],
                             ["gen_000/model", "gen_000/pool.jsonl"]),
        "base_evaluate": _stage("selfloop stage evaluate 0", ["gen_000/model", HELD], _EVAL,
                                ["gen_000/eval.json", "gen_000/eval_samples.jsonl"]),
    }


def generation_stages(g: int, source: int | None = None, start: int | None = None) -> dict[str, dict]:
    """One generation of the loop arm: plan, generate, verify, curate, train, evaluate,
    measure, monitor. ``source``: the generation whose checkpoint it sampled from (the last
    one unless the monitor rolled back to the champion); ``start``: the one its training
    started from (``source`` unless ``train.start`` is 'base')."""
    d, prev = f"gen_{g:03d}", f"gen_{g - 1:03d}"
    source = g - 1 if source is None else source
    src = f"gen_{source:03d}/model"
    init = f"gen_{(source if start is None else start):03d}/model"
    # the plan applies the last generation's monitor decisions (a rollback picks the best
    # evaluation so far), on top of the last plan's policy
    plan_deps = [f"{prev}/eval.json"]
    if g > 1:
        plan_deps = [f"gen_{k:03d}/eval.json" for k in range(g)]
        plan_deps += [f"{prev}/plan.json", f"{prev}/monitor.json"]
    curated = [f"{d}/{n}" for n in ("accepted.jsonl", "curation.jsonl", "pool.jsonl", "mix.jsonl",
                                    "makeup.json", "validation/accepted.json", "validation/mix.json")]
    specs = {
        "plan": (plan_deps, ["plan", "domain", "run.seed", "monitor", "train.reference_fraction",
                              "curate.cap_per_problem"], [f"{d}/plan.json"]),
        "generate": ([src, f"{d}/plan.json", HELD],
                     ["domain", "generate", "plan", "curate.selection", *_RUN],
                     [f"{d}/candidates.jsonl"]),
        "verify": ([f"{d}/candidates.jsonl", f"{prev}/model", HELD], _GATE,
                   [f"{d}/verified.jsonl", f"{d}/validation/candidates.json"]),
        "curate": ([f"{d}/verified.jsonl", f"{prev}/pool.jsonl", f"{d}/plan.json", REF, HELD],
                   ["curate", "train", *_GATE, "run.seed"], curated),
        "train": ([init, f"{d}/plan.json", f"{d}/mix.jsonl", f"{d}/pool.jsonl", REF, HELD],
                  ["train", *_RUN], [f"{d}/model"]),
        "evaluate": ([f"{d}/model", HELD], _EVAL, [f"{d}/eval.json", f"{d}/eval_samples.jsonl"]),
        "measure": ([f"{d}/verified.jsonl", f"{d}/accepted.jsonl", f"{d}/eval_samples.jsonl", REF, src,
                     f"{d}/plan.json"],
                    ["measure", "domain", "verify", *_RUN], [f"{d}/diversity.json"]),
        "monitor": ([f"gen_{k:03d}/{n}" for k in range(1, g + 1) for n in ("diversity.json", "eval.json")]
                    + [f"{d}/plan.json"]
                    + [f"gen_{k:03d}/monitor.json" for k in range(1, g)]
                    + ["gen_000/eval.json", "gen_000/eval_samples.jsonl", REF],
                    ["monitor", "measure.probe_n", "measure.probe_draws", "run.seed"], [f"{d}/monitor.json"]),
    }
    return {f"{d}_{step}": _stage(f"selfloop stage {step} {g}", deps, _replicated(ps, step), outs)
            for step, (deps, ps, outs) in specs.items()}


def control_stages(g: int, start: int | None = None) -> dict[str, dict]:
    """One generation of the control arm: a reference-only mix, train (from ``start``'s
    checkpoint: the last generation's unless ``train.start`` is 'base'), evaluate."""
    d = f"control/gen_{g:03d}"
    specs = {
        "mix": ([REF, HELD], ["train", *_GATE, "run.seed"], [f"{d}/mix.jsonl", f"{d}/validation/mix.json"]),
        "train": ([_model(g - 1 if start is None else start, "control"), f"{d}/mix.jsonl", REF, HELD],
                  ["train", *_RUN], [f"{d}/model"]),
        "evaluate": ([f"{d}/model", HELD], _EVAL, [f"{d}/eval.json", f"{d}/eval_samples.jsonl"]),
    }
    return {f"control_{g:03d}_{step}": _stage(f"selfloop stage {step} {g} --arm control", deps,
                                              _replicated(ps, step), outs)
            for step, (deps, ps, outs) in specs.items()}


def history_plots(levels: list[int]) -> dict[str, list[str]]:
    """The run's ``dvc plots``: title -> history.json columns (``recording.write_history``)."""
    return {
        "held-out greedy accuracy": [f"L{lv}" for lv in levels],
        "synthetic answers": ["accepted", "pool"],
        "training mix by origin (share of draws)": ["reference_share", "mix_this_generation",
                                                    "mix_earlier_generations"],
        "diversity (n-gram Vendi, mean over levels)": [
            "vendi_samples", "vendi_samples_well_formed", "vendi_accepted", "vendi_accepted_equal_n",
            "vendi_probe_well_formed"],
        "diversity (embedding Vendi, mean over levels)": ["vendi_embedding_samples",
                                                          "vendi_embedding_accepted"],
        "answer-template entropy, digits masked (bits, mean over levels)": [
            "entropy_samples", "entropy_accepted", "entropy_probe_well_formed"],
        "divergence from the reference data: template KL (mean over levels)": ["kl_samples", "kl_accepted"],
        "divergence from the reference data: embedding MMD (mean over levels)": ["mmd_samples",
                                                                                 "mmd_accepted"],
        "model confidence: mean sequence log-probability of its samples": ["mean_logprob_samples"],
        "distinct correct answers per solved problem (mean over levels)": ["ways_samples", "ways_accepted"],
    }


def history_stage(last: int) -> dict[str, dict]:
    """history.json (one row per generation, for ``dvc plots``) from the evaluations and
    accepted sets of generations 0..``last``: a stage, so a replay or an experiment redraws it."""
    deps = [f"gen_{g:03d}/eval.json" for g in range(last + 1)]
    deps += [f"gen_{g:03d}/{n}" for g in range(1, last + 1)
             for n in ("accepted.jsonl", "pool.jsonl", "mix.jsonl", "diversity.json")]
    return {"history": _stage("selfloop stage history", deps, ["domain.levels"],
                              [{"history.json": {"cache": False}}])}


def stages_upto(g: int, control: bool = False) -> dict[str, dict]:
    """Every stage a run needs to have generation ``g`` (and, optionally, its control arm)."""
    stages = base_stages()
    for i in range(1, g + 1):
        stages.update(generation_stages(i))
        if control:
            stages.update(control_stages(i))
    return stages


# --------------------------------------------------------------------------- the repo


def find_root(path: Path) -> Path | None:
    """The DVC repository holding ``path`` (the nearest parent with a .dvc directory)."""
    p = path.resolve()
    for d in (p, *p.parents):
        if (d / ".dvc").is_dir():
            return d
    return None


def _dvc_bin() -> str:
    exe = Path(sys.executable).parent / "dvc"
    return str(exe) if exe.exists() else (shutil.which("dvc") or "dvc")


@contextlib.contextmanager
def repo_lock(root: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """One selfloop DVC command per repository at a time; others wait (up to ``wait_s``)."""
    path = root / ".dvc" / "tmp" / "selfloop.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DvcError(f"waited {wait_s:.0f}s for the DVC lock {path} (another selfloop "
                                   "run is versioning in this repository)") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def dvc(root: Path, *args: str) -> str:
    """Run one DVC command in ``root`` under the repo lock; retry while DVC says it is busy.
    (Never with ``--quiet``: it silences DVC's errors too, and the error is what a
    ``DvcError`` has to show; the output is captured either way.)"""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    with repo_lock(root):
        for attempt in range(BUSY_RETRIES + 1):
            proc = subprocess.run([_dvc_bin(), "--wait-for-lock", *args], cwd=root, env=env,
                                  capture_output=True, text=True)
            out = proc.stdout + proc.stderr
            if proc.returncode == 0:
                return out
            if "is busy" not in out or attempt == BUSY_RETRIES:
                raise DvcError(f"`dvc {' '.join(args)}` failed in {root} "
                               f"(exit {proc.returncode}):\n{out.strip()}")
            time.sleep(min(0.5 * 2**attempt, 10))
    raise AssertionError("unreachable")


def file_md5(path: Path) -> str:
    """The md5 DVC 3 records for a file (plain md5 of its bytes)."""
    return file_digest(path, "md5")


class Versioning:
    """The DVC pipeline of one run directory. Disabled (every call a no-op) when the run is
    not inside a DVC repository or ``track.dvc`` is off."""

    def __init__(self, workdir: Path, enabled: bool = True, levels: tuple[int, ...] = ()) -> None:
        self.workdir = workdir.resolve()
        self.levels = levels
        self.root = find_root(self.workdir) if enabled else None
        self.pipeline = self.workdir / "dvc.yaml"

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def preflight(self) -> None:
        """Fail before any work when DVC could not record this run: DVC refuses a pipeline
        file that Git ignores, and a run directory under an ignored folder (``runs/`` in
        .gitignore is common) would otherwise fail at its first record, after the base
        model has trained."""
        if not self.enabled:
            return
        try:
            proc = subprocess.run(["git", "check-ignore", "-v", "--", str(self.pipeline)], cwd=self.root,
                                  capture_output=True, text=True)
        except OSError:  # no git: DVC without an SCM ignores nothing
            return
        if proc.returncode == 0:  # 1: not ignored; 128: not a git repository
            rule = proc.stdout.split("\t")[0].strip()
            raise RunDirIgnored(
                f"{self.pipeline.relative_to(self.root)} is ignored by git (rule {rule}), and DVC "
                "will not track a pipeline file git ignores. Remove that rule, use a run directory "
                "git does not ignore (--set run.workdir=...), or run without DVC (--set track.dvc=false).")

    def target(self, stage: str) -> str:
        return f"{self.pipeline.relative_to(self.root)}:{stage}"

    def _write_pipeline(self, stages: dict[str, dict]) -> None:
        doc = yaml.safe_load(self.pipeline.read_text()) if self.pipeline.exists() else None
        doc = doc or {}
        doc.setdefault("stages", {}).update(stages)
        names = doc["stages"]
        # Stage outputs only, so a replay or `dvc exp run` shows its own numbers.
        gens = sorted({n[:7] for n in names if n.startswith("gen_")})
        ctl = sorted({n[:11] for n in names if n.startswith("control_")})
        metrics = [f"{g}/eval.json" for g in gens] + [f"control/gen_{c[8:11]}/eval.json" for c in ctl]
        metrics += [f"{g}/diversity.json" for g in gens if f"{g}_measure" in names]
        # a generation recorded before the curate step wrote makeup.json keeps its old stage
        metrics += [f"{g}/makeup.json" for g in gens
                    if f"{g}/makeup.json" in _outs(names.get(f"{g}_curate", {}))]
        doc["metrics"] = ["gen_000/eval.json", *metrics]
        doc["plots"] = [{title: {"x": "generation", "y": {"history.json": cols}}}
                        for title, cols in history_plots(self.levels).items()]
        header = "# Written by selfloop as the run goes (see src/selfloop/versioning.py).\n"
        write_text(self.pipeline, header + yaml.safe_dump(doc, sort_keys=False, width=120))

    def _ignore_local_files(self) -> None:
        """The run's lock and MLflow state belong to this machine, not to the repository."""
        path = self.workdir / ".gitignore"
        lines = path.read_text().splitlines() if path.exists() else []
        missing = [n for n in LOCAL_FILES if n not in lines]
        if missing:
            write_text(path, "\n".join([*lines, *missing]) + "\n")

    def record(self, stages: dict[str, dict]) -> None:
        """Declare ``stages`` (their outputs already written by the loop) and commit the ones
        dvc.lock does not hold yet (or holds with other dependencies). A stage already
        recorded is never re-committed: a file damaged after it was recorded shows up in
        ``dvc status`` and ``selfloop checkout`` restores it, instead of being recorded as
        the truth on resume."""
        if not self.enabled:
            return
        locked = self._lock_stages()
        todo = [name for name, st in stages.items() if name not in locked
                or {d["path"] for d in locked[name].get("deps", [])} != set(st.get("deps", []))]
        with repo_lock(self.root):
            self._write_pipeline(stages)
            self._ignore_local_files()
        if todo:
            dvc(self.root, "commit", "--force", *[self.target(s) for s in todo])

    def _lock_stages(self) -> dict[str, dict]:
        lock = self.workdir / "dvc.lock"
        return (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}

    def lock_outs(self) -> dict[str, str]:
        """Output path (relative to the workdir) -> md5 from dvc.lock (directories: .dir hash)."""
        stages = self._lock_stages()
        return {o["path"]: o["md5"] for s in stages.values() for o in s.get("outs", []) if "md5" in o}

    def generation_hash(self, g: int) -> str:
        """One hash for a generation's versioned files: md5 over its outputs' DVC hashes."""
        prefix = f"gen_{g:03d}/"
        outs = sorted((p, m) for p, m in self.lock_outs().items() if p.startswith(prefix))
        return hashlib.md5(json.dumps(outs).encode()).hexdigest() if outs else ""

    def has_remote(self) -> bool:
        if not self.enabled:
            return False
        try:
            return bool(dvc(self.root, "remote", "default").strip())
        except DvcError as e:  # "No default remote set"
            if "no default remote" in str(e).lower():
                return False
            raise

    def push(self) -> str:
        """Send every output of this run's pipeline to the default remote."""
        return dvc(self.root, "push", str(self.pipeline.relative_to(self.root)))


def checkout(workdir: Path, g: int) -> list[str]:
    """Restore generation ``g`` of a run (and everything it was made from) exactly as
    dvc.lock records it: from the local cache, else pulled from the default remote.
    Returns the restored paths."""
    from selfloop.lock import exclusive
    from selfloop.workspace import Workspace

    v = Versioning(workdir)
    if not v.enabled:
        raise DvcError(f"{workdir} is not inside a DVC repository")
    lock = workdir / "dvc.lock"
    stages = v._lock_stages()
    wanted = [s for s in stages_upto(g) if s in stages]
    if f"gen_{g:03d}_evaluate" not in stages:
        raise DvcError(f"generation {g} is not recorded in {lock}")
    targets = [v.target(s) for s in wanted]
    with exclusive(Workspace(workdir)):  # never under a live run
        try:
            dvc(v.root, "checkout", "--force", *targets)
        except DvcError as e:
            if "missing" not in str(e).lower() and "not in cache" not in str(e).lower():
                raise
            dvc(v.root, "pull", "--force", *targets)
    return [o["path"] for s in wanted for o in stages[s].get("outs", [])]
