"""A journal torn anywhere inside its last record reads back as the complete records before it (issue 16, point 6),
even when a subject id holds a newline, quotes or commas; the next run drops the torn tail and appends after it."""

from __future__ import annotations

from pathlib import Path

from brainage.predict import load_model, main
from brainage.predict.command import build_parser, run_settings
from brainage.predict.output import OUTPUT_COLUMNS, Journal, journal_path, read_journals
from tests.helpers.predict import read_rows, write_scans

SETTINGS = {"model": "m.ckpt", "model_created": "2025", "tta": False, "save_routing": None}


def _row(subject: str, i: int) -> dict:
    return {"subject_id": subject, "session": "", "path": f"/data/{i}.nii.gz", "age": "",
            "predicted_age": f"{40 + i}.00", "corrected_age": f"{40 + i}.00", "brain_age_gap": "", "corrected_gap": "", "uncertainty": "",
            "status": "ok", "error": ""}


ROWS = [_row("plain", 0), _row('multi\nline "quoted", id', 1), _row("caf\u00e9 \u0394 \U0001f9e0", 2),
        _row("line\r\nbreak\rand,comma\n", 3)]


def _journal_in_two_writes(tmp_path, split: int) -> tuple[Path, Path, int, bytes]:
    """Journal ROWS in two writes (ROWS[:split], then the rest): (output, journal, size after the first, bytes)."""
    out = tmp_path / "pred.csv"
    path = journal_path(out)
    with Journal(path, SETTINGS) as journal:
        journal.write(ROWS[:split])
        first = path.stat().st_size
        journal.write(ROWS[split:])
    return out, path, first, path.read_bytes()


def test_journal_torn_at_every_byte_of_the_last_record(tmp_path):
    out, path, complete, whole = _journal_in_two_writes(tmp_path, 3)
    assert len(whole) > complete
    assert list(read_journals(out, SETTINGS).values()) == ROWS
    for cut in range(complete, len(whole)):
        path.write_bytes(whole[:cut])
        assert list(read_journals(out, SETTINGS).values()) == ROWS[:3], cut
        with Journal(path, SETTINGS) as journal:  # a rerun: the torn tail is dropped, the record written again
            assert path.stat().st_size == complete, cut
            journal.write(ROWS[3:])
        assert path.read_bytes() == whole, cut


def test_journal_torn_inside_a_multiline_id_of_any_record(tmp_path):
    """Cut inside the quoted newline of record 1: records 0 survives, nothing raises, the rest is redone."""
    out, path, first, whole = _journal_in_two_writes(tmp_path, 1)
    for cut in range(first, len(whole)):
        path.write_bytes(whole[:cut])
        done = list(read_journals(out, SETTINGS).values())
        assert done == ROWS[:len(done)] and len(done) >= 1, cut


def test_resume_after_a_tear_inside_a_newline_id(tmp_path, tiny_ckpt):
    scans = write_scans(tmp_path / "scans", 3)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject_id,path\n" + "".join(f'"id {i}\nsecond line",{p}\n' for i, p in enumerate(scans)))
    out = tmp_path / "pred.csv"
    argv = ["--model", str(tiny_ckpt), "--input", str(manifest), "--output", str(out), "--workers", "0"]
    assert main(argv) == 0
    reference = out.read_bytes()
    rows = read_rows(out)
    assert [r["subject_id"] for r in rows] == [f"id {i}\nsecond line" for i in range(3)]
    out.unlink()
    journal = journal_path(out)
    with Journal(journal, run_settings(build_parser().parse_args(argv), load_model(tiny_ckpt))) as handle:
        handle.write(rows[:2])
    data = journal.read_bytes()
    cut = data.rindex(b"second line")  # a kill inside the second record's id, just past the newline it holds
    journal.write_bytes(data[:cut])
    assert main(argv) == 0
    assert out.read_bytes() == reference
    assert not journal.exists()
    assert list(OUTPUT_COLUMNS) == list(rows[0])
