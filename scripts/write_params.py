"""Regenerate params.yaml from the typed defaults in src/selfloop/config.py (help text as
comments), so the file and the code never disagree: `python scripts/write_params.py`."""

import dataclasses
import sys
import typing
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from selfloop.config import Params  # noqa: E402


def render() -> str:
    lines = ["# Every knob of selfloop, one section per step. Generated from src/selfloop/config.py",
             "# by scripts/write_params.py; override a key with `selfloop run --set section.key=value`.",
             ""]
    hints = typing.get_type_hints(Params)
    for f in dataclasses.fields(Params):
        cls = hints[f.name]
        inst = cls()
        lines.append(f"{f.name}:")
        for sf in dataclasses.fields(cls):
            value = yaml.safe_dump(getattr(inst, sf.name), default_flow_style=True).strip()
            value = value.removesuffix("...").strip()
            lines.append(f"  {sf.name}: {value}  # {sf.metadata['help']}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    (ROOT / "params.yaml").write_text(render())
