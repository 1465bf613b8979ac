"""Where every file of a loop lives. One directory per generation; gen_000 is the base."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def reference(self) -> Path:
        return self.data / "reference.jsonl"

    @property
    def heldout(self) -> Path:
        return self.data / "heldout.jsonl"

    @property
    def init_model(self) -> Path:
        return self.root / "init_model"

    def gen(self, g: int, arm: str = "loop") -> Path:
        base = self.root if arm == "loop" or g == 0 else self.root / arm
        return base / f"gen_{g:03d}"

    def model(self, g: int, arm: str = "loop") -> Path:
        return self.gen(g, arm) / "model"

    def results(self) -> Path:
        return self.root / "results.json"
