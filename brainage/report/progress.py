"""Stage progress of `brainage report` on stderr, so a report of several minutes is never silent.

Our choice (issue 17): by default one status line -- a single tqdm bar on a terminal that is reset at every stage
("report 3/5 occlusion  7/16 subject"), or, when stderr is not a terminal (logs, CI), one line per stage plus a
progress line at most every ``LOG_EVERY_S`` seconds. ``--verbose`` prints these lines on a terminal too and lets the
stages show their own detail bars (predict's per-scan bar) and log messages.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from tqdm.auto import tqdm

__all__ = ["StageProgress", "Stage"]

LOG_EVERY_S = 30.0  # without a terminal: a progress line at most this often within a stage


class Stage:
    """Counter of one stage; ``advance()`` after each unit of work."""

    def __init__(self, owner: StageProgress, label: str, total: int | None, unit: str) -> None:
        self.owner, self.label, self.total, self.unit = owner, label, total, unit
        self.done = 0
        self.start = self.last_line = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n
        bar = self.owner.bar
        if bar is not None:
            bar.update(n)
        elif time.perf_counter() - self.last_line >= LOG_EVERY_S:
            self.last_line = time.perf_counter()
            self.owner.line(f"{self.label}: {self.done}{'' if self.total is None else f'/{self.total}'} {self.unit}")


class StageProgress:
    """Progress over the named stages of one report.

    Args:
        stages: the stage names in order (they number the lines: "report 2/5 analyse").
        verbose: a line per stage and the stages' own detail bars (``detail``).
        stream: where to write (stderr by default).
    """

    def __init__(self, stages: Sequence[str], verbose: bool = False, stream: TextIO | None = None) -> None:
        self.stages = list(stages)
        self.verbose = verbose
        self.stream = sys.stderr if stream is None else stream
        terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar: tqdm | None = None
        if terminal and not verbose:
            self.bar = tqdm(total=0, file=self.stream, leave=False, dynamic_ncols=True,
                            bar_format="{desc} {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}]")

    @property
    def detail(self) -> bool:
        """Whether stages show their own bars and details (``--verbose``)."""
        return self.verbose

    def line(self, message: str) -> None:
        print(f"report: {message}", file=self.stream, flush=True)

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "") -> Iterator[Stage]:
        """Run one stage: ``with progress.stage("occlusion", 16, "subject") as stage: ... stage.advance()``."""
        number = self.stages.index(name) + 1 if name in self.stages else 0
        label = f"{number}/{len(self.stages)} {name}" if number else name
        stage = Stage(self, label, total, unit)
        if self.bar is not None:
            self.bar.reset(total=total)
            self.bar.unit = unit
            self.bar.set_description_str(f"report {label}")
        else:
            self.line(f"{label}" + (f" ({total} {unit})" if total is not None else "") + " ...")
        yield stage
        if self.bar is None:
            self.line(f"{label} done in {time.perf_counter() - stage.start:.0f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
