"""What the parity and eval reports share: JSON from `to_dict`, PNGs through matplotlib's Agg backend, both
written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from mixtral_trt.common.fileio import atomic_file


class ReportFiles:
    """Mixin: `to_dict()` (the subclass's) becomes `to_json` / `save_json`; `save_plot` is the subclass's."""

    def to_dict(self) -> dict:
        raise NotImplementedError

    def save_plot(self, path: str | Path) -> Path:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save_json(self, path: str | Path) -> Path:
        with atomic_file(path) as f:
            f.write(self.to_json())
        return Path(path)

    def save(self, json_path: str | Path | None, plot: str | Path | None) -> None:
        """The JSON and the PNG, each where a path is given."""
        if json_path:
            self.save_json(json_path)
        if plot:
            self.save_plot(plot)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    pyplot().close(fig)
    return Path(path)
