"""Stage progress of `brainage report`: a line per stage without a terminal, one reset bar on a terminal."""

from __future__ import annotations

import io

from brainage.report import progress as P


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_each_stage_prints_its_start_and_end():
    stream = io.StringIO()
    progress = P.StageProgress(["routing", "analyse"], stream=stream)
    with progress.stage("routing", 3, "scans") as stage:
        for _ in range(3):
            stage.advance()
    with progress.stage("analyse", 2, "MoE layers"):
        pass
    lines = stream.getvalue().splitlines()
    assert lines[0] == "report: 1/2 routing (3 scans) ..." and lines[1].startswith("report: 1/2 routing done in ")
    assert lines[2] == "report: 2/2 analyse (2 MoE layers) ..." and len(lines) == 4
    assert stage.done == 3


def test_a_long_stage_reports_progress_between_its_start_and_end(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(P, "LOG_EVERY_S", 0.0)  # every advance is "long enough" after the last line
    with P.StageProgress(["occlusion"], stream=stream).stage("occlusion", 2, "scans") as stage:
        stage.advance()
    assert "report: 1/1 occlusion: 1/2 scans" in stream.getvalue().splitlines()


def test_on_a_terminal_one_bar_is_reset_per_stage():
    stream = _Terminal()
    progress = P.StageProgress(["routing", "analyse"], stream=stream)
    with progress.stage("routing", 4, "scans") as stage:
        stage.advance(4)
        assert progress.bar.n == 4 and progress.bar.total == 4
    with progress.stage("analyse", 2, "MoE layers"):
        assert progress.bar.n == 0 and progress.bar.total == 2 and "2/2 analyse" in progress.bar.desc
    progress.close()
    assert "report 1/2 routing" in stream.getvalue() and "done in" not in stream.getvalue()
