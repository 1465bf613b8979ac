"""Where every file of a loop lives. One directory per generation; gen_000 is the base."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfloop.records import read_json


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

    def source_generation(self, g: int) -> int:
        """The generation whose checkpoint generation ``g`` of the loop samples from: the last
        one, or the champion after a rollback (``g``'s plan says which)."""
        return read_json(self.gen(g) / "plan.json").get("policy", {}).get("source_generation", g - 1)

    def start_generation(self, g: int, start: str, arm: str = "loop") -> int:
        """The generation whose checkpoint generation ``g``'s training starts from
        (``train.start``): 0 for 'base', else the loop's source or the control arm's last."""
        if start == "base":
            return 0
        return self.source_generation(g) if arm == "loop" else g - 1

    def results(self) -> Path:
        return self.root / "results.json"
