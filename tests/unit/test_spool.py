"""Spool housekeeping: only what no unfinished item needs is ever removed."""

from __future__ import annotations

from pathlib import Path

from daemon.spool import collect_garbage, release


def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_garbage_is_temporary_copies_and_copies_nobody_needs(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    needed = _file(spool / "ab" / ("ab" + "1" * 62 + ".jpg"))
    orphan = _file(spool / "cd" / ("cd" + "2" * 62 + ".jpg"))
    partial = _file(spool / "tmp" / "0123.part")
    # The needed copy is named through another spelling of the spool path: still kept.
    other_spelling = str(tmp_path / "." / "spool" / "ab" / needed.name)
    assert collect_garbage(spool, [other_spelling, "/card/DCIM/in_place.jpg"]) == 2
    assert needed.exists() and not orphan.exists() and not partial.exists()


def test_release_deletes_only_files_inside_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    copy = _file(spool / "ab" / "ab.jpg")
    original = _file(tmp_path / "card" / "DCIM" / "a.jpg")
    assert release(spool, [str(copy), str(original), str(spool / "gone.jpg")]) == 1
    assert not copy.exists() and original.exists()


def test_a_missing_spool_is_nothing_to_clean(tmp_path: Path) -> None:
    assert collect_garbage(tmp_path / "none", []) == 0
