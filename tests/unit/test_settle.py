"""The settle rule and candidate filtering, with time passed in."""

from __future__ import annotations

from pathlib import Path

from daemon.watch import Settler, is_candidate, media_kind, scan


def test_a_file_is_ready_only_after_an_unchanged_window() -> None:
    stats = {"/c/a.jpg": (10, 1)}
    s = Settler()
    s.observe("/c/a.jpg", stats["/c/a.jpg"], now=0.0, settle=2.0)
    assert s.due(1.0, stats.get) == []
    stats["/c/a.jpg"] = (20, 2)  # still growing: the window restarts
    assert s.due(1.5, stats.get) == []
    assert s.due(3.0, stats.get) == []
    assert s.due(3.6, stats.get) == ["/c/a.jpg"]
    assert len(s) == 0


def test_close_after_write_makes_a_file_ready_at_once_unless_it_changes_again() -> None:
    stats = {"/c/b.jpg": (5, 1)}
    s = Settler()
    s.observe("/c/b.jpg", (5, 1), now=0.0, settle=2.0)
    s.observe("/c/b.jpg", (5, 1), now=0.1, settle=2.0, closed=True)
    assert s.due(0.2, stats.get) == ["/c/b.jpg"]
    s.observe("/c/b.jpg", (5, 1), now=1.0, settle=2.0, closed=True)
    stats["/c/b.jpg"] = (9, 2)  # reopened and written after the close
    assert s.due(1.1, stats.get) == []


def test_vanished_files_are_forgotten_and_busy_roots_reported() -> None:
    s = Settler()
    s.observe("/card/DCIM/x.jpg", (1, 1), now=0.0, settle=2.0)
    assert s.busy_under(Path("/card")) and not s.busy_under(Path("/car"))
    assert s.due(5.0, lambda p: None) == []
    assert not s.busy_under(Path("/card"))


def test_candidates_skip_hidden_temporary_and_foreign_files() -> None:
    root = Path("/card")
    assert is_candidate(root, "/card/DCIM/100GOPRO/G001.JPG")
    assert is_candidate(root, "/card/clip.MP4")
    for bad in [
        "/card/.hidden.jpg",
        "/card/.Trashes/a.jpg",
        "/card/a.jpg.part",
        "/card/~a.jpg",
        "/card/notes.txt",
        "/elsewhere/a.jpg",
        "/card/System Volume Information/a.jpg",
    ]:
        assert not is_candidate(root, bad), bad
    assert media_kind("x.JPEG") == "image" and media_kind("x.mov") == "video"


def test_scan_finds_media_recursively_and_skips_hidden_folders(tmp_path: Path) -> None:
    (tmp_path / "DCIM" / "100").mkdir(parents=True)
    (tmp_path / ".Spotlight").mkdir()
    (tmp_path / "DCIM" / "100" / "a.jpg").write_bytes(b"x")
    (tmp_path / "DCIM" / "100" / "b.mp4").write_bytes(b"yy")
    (tmp_path / ".Spotlight" / "c.jpg").write_bytes(b"z")
    (tmp_path / "readme.txt").write_text("t")
    found = dict(scan(tmp_path))
    assert sorted(Path(p).name for p in found) == ["a.jpg", "b.mp4"]
    assert [st[0] for p, st in sorted(found.items())] == [1, 2]
    assert [Path(p).name for p, _ in scan(tmp_path, recursive=False)] == []
