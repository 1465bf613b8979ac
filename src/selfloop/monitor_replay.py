"""The collapse monitor replayed over a recorded run at other thresholds (``selfloop monitor``).

Calibrating the monitor for a new domain or model means asking: at these thresholds, when
would it have flagged this run, and would it have flagged a run that was fine? Every
generation keeps what the monitor read (``diversity.json``, ``eval.json``, the plan's applied
decisions), so its decisions can be computed again with other ``monitor.*`` settings, by the
same code the loop runs (``loop.monitor_decide``), without sampling or training anything.

What a replayed row means depends on whether the run acted on its monitor (``monitor.act``):

- it did not: the run never depended on the decisions, so every row is exactly what a
  monitor with these thresholds would have decided in it;
- it did: up to the first generation whose acted-on decisions (the actions, ``wait`` aside)
  differ from those recorded, the run would have been the same, so those rows are exact.
  After it, the run itself would have gone differently; the later rows are the replayed
  monitor's reading of the run as it happened, not of that other run.

Each replayed generation sees the replayed decisions of the earlier ones (the rollback count
reads them), and the plan decisions the run applied (``kl_wait`` reads them)."""

from __future__ import annotations

import dataclasses

from selfloop.config import ConfigError, Params, apply_overrides, params_from_dict, with_added_keys
from selfloop.monitor import Thresholds, flags
from selfloop.records import read_json
from selfloop.workspace import Workspace


@dataclasses.dataclass(frozen=True)
class Replayed:
    generation: int
    recorded: list[dict]
    replayed: list[dict]

    @property
    def same_actions(self) -> bool:
        """Whether the actions (``wait`` aside) are the same, as the next plan applies them."""
        return actions(self.recorded) == actions(self.replayed)


def actions(decisions: list[dict]) -> set[str]:
    return {d["action"] for d in flags(decisions)}


# What a replay may change: the settings that decide (``monitor.Thresholds``). The others,
# ``monitor.act`` and the steps and caps a plan applies, change what the run then did, which a
# replay cannot redo.
REPLAYABLE = tuple(f"monitor.{f.name}" for f in dataclasses.fields(Thresholds))


def replay_params(ws: Workspace, overrides: list[str]) -> Params:
    """The run's saved parameters with ``overrides``, which may only be ``REPLAYABLE``."""
    other = [o for o in overrides if o.split("=", 1)[0].strip() not in REPLAYABLE]
    if other:
        raise ConfigError(f"only the monitor's thresholds can be replayed over a recorded run, not {other}; "
                          f"they are: {', '.join(REPLAYABLE)}")
    path = ws.root / "params.json"
    if not path.exists():
        raise ConfigError(f"{ws.root}: no recorded run here (no params.json)")
    data = with_added_keys(read_json(path))[0]
    apply_overrides(data, overrides)
    return params_from_dict(data)


def replay(ws: Workspace, params: Params) -> list[Replayed]:
    """Generation by generation, the decisions recorded and those ``params.monitor`` makes,
    over every generation that has a recorded monitor decision."""
    from selfloop.loop import monitor_decide, monitor_history

    decided = sorted(int(p.parent.name[4:]) for p in ws.root.glob("gen_*/monitor.json")
                     if p.parent.name[4:].isdigit())
    missing = sorted(set(range(1, max(decided, default=0) + 1)) - set(decided))
    if missing:
        raise ConfigError(f"{ws.root}: generation(s) {missing} have no monitor.json but later ones do; "
                          "the monitor reads every earlier generation, so the run cannot be replayed "
                          "as it is")
    out: list[Replayed] = []
    for g in decided:
        history = monitor_history(ws, g, [r.replayed for r in out])
        out.append(Replayed(g, read_json(ws.gen(g) / "monitor.json")["decisions"],
                            monitor_decide(params, ws, history)))
    return out


def caveats(ws: Workspace, params: Params) -> list[str]:
    """What the replay cannot read in this run, said rather than left silent."""
    if params.monitor.probe_floor and not (ws.gen(0) / "eval_samples.jsonl").exists():
        return ["The base model's held-out samples (gen_000/eval_samples.jsonl) are not in this run, "
                "so the probe signal is off in this replay, whatever monitor.probe_floor says."]
    return []


def first_difference(rows: list[Replayed]) -> int | None:
    """The first generation whose acted-on decisions differ from those recorded (None: none)."""
    return next((r.generation for r in rows if not r.same_actions), None)


def _show(decisions: list[dict]) -> str:
    return ", ".join(f"{d['action']} ({d['signal']})" for d in decisions) or "-"


def table(rows: list[Replayed], acted: bool, overrides: list[str], notes: list[str] = ()) -> str:
    """The replay as markdown: one row a generation, then what the rows mean for this run,
    then ``notes`` (``caveats``)."""
    lines = ["| generation | recorded | replayed | same actions |", "|---|---|---|---|"]
    lines += [f"| {r.generation} | {_show(r.recorded)} | {_show(r.replayed)} | "
              f"{'yes' if r.same_actions else '**no**'} |" for r in rows]
    first = first_difference(rows)
    what = " ".join(overrides) or "the run's own thresholds"
    if first is None:
        note = f"With {what}, the monitor acts the same in every generation."
    elif acted:
        note = (f"With {what}, the actions first differ at generation {first}. This run acted on its "
                f"monitor, so from generation {first + 1} on it would itself have gone differently: "
                f"the rows after {first} read the run as it happened.")
    else:
        note = (f"With {what}, the actions first differ at generation {first}. This run did not act "
                "on its monitor (monitor.act false), so every row is what this monitor would have "
                "decided in it.")
    return "\n".join([*lines, "", note, *notes])
