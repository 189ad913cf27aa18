"""Progress reporting for long work: library functions take an optional rich `Progress`; the CLI passes one.

`step(progress, "trace")` shows a spinner line for one stage; `bar(progress, "load", total)` a bar.
With `progress=None` both do nothing, so library callers and tests stay quiet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress


def make_progress(transient: bool = False) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=transient)


@contextlib.contextmanager
def step(progress: Progress | None, description: str) -> Iterator[None]:
    if progress is None:
        yield
        return
    task = progress.add_task(description, total=1)
    yield
    progress.update(task, completed=1)


@contextlib.contextmanager
def bar(progress: Progress | None, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`."""
    if progress is None:
        yield lambda n=1: None
        return
    task = progress.add_task(description, total=total)
    yield lambda n=1: progress.advance(task, n)
    progress.update(task, completed=total)
