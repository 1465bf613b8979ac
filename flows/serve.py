"""Serve the deployments declared in prefect.yaml (no work pool needed): `make serve`."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from prefect import serve

from flows.loop import loop_flow

ROOT = Path(__file__).resolve().parents[1]


def deployments(path: Path = ROOT / "prefect.yaml") -> list:
    spec = yaml.safe_load(path.read_text())
    out = []
    for d in spec["deployments"]:
        if d["entrypoint"] != "flows/loop.py:loop_flow":
            raise ValueError(f"{path}: unknown entrypoint {d['entrypoint']!r}")
        crons = [s["cron"] for s in d.get("schedules", [])]
        out.append(loop_flow.to_deployment(
            name=d["name"], description=d.get("description"), parameters=d.get("parameters") or {},
            tags=d.get("tags"), cron=crons[0] if crons else None,
        ))
    return out


if __name__ == "__main__":
    serve(*deployments())
    sys.exit(0)
