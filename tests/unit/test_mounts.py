"""Mount detection's pure parts and config: parsing the mount table, matching roots, the card
filter, and the monitor's bookkeeping over a mount table given as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import MountRootConfig, MountsConfig, WatchConfig, build_config
from daemon.errors import ConfigError
from daemon.mounts import (
    Mount,
    MountMonitor,
    MountTable,
    accepts,
    card_watch,
    looks_like_camera,
    parse_mounts,
    root_for,
    watch_at,
)
from tests.conftest import REPO

PROC = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/mmcblk0p2 / ext4 rw,noatime 0 0
/dev/sda1 /media/pi/My\\040Card vfat rw,uid=1000 0 0
/dev/sdb1 /media/DASHCAM exfat rw 0 0
broken-line
"""


def root(pattern: str, require: str = "camera", labels: tuple[str, ...] = ()) -> MountRootConfig:
    return MountRootConfig(pattern, WatchConfig(path=Path()), require, labels)  # type: ignore[arg-type]


def test_the_mount_table_is_parsed_with_its_octal_escapes() -> None:
    mounts = parse_mounts(PROC)
    assert Mount("/dev/sda1", "/media/pi/My Card", "vfat") in mounts
    assert [m.point for m in mounts] == ["/sys", "/", "/media/pi/My Card", "/media/DASHCAM"]


def test_a_root_pattern_matches_whole_mount_points_one_level_per_star() -> None:
    roots = [root("/media/*"), root("/run/media/*/*")]
    assert root_for("/media/DASHCAM", roots) is roots[0]
    assert root_for("/media/pi/CARD", roots) is None
    assert root_for("/media", roots) is None
    assert root_for("/run/media/ana/CARD", roots) is roots[1]
    assert root_for("/mnt/media/CARD", roots) is None


def test_cards_are_taken_by_camera_folders_or_label() -> None:
    assert looks_like_camera(["DCIM", "MISC"])
    assert looks_like_camera(["BlackVue"]) and looks_like_camera(["Record"])
    assert not looks_like_camera(["Documents", "dcim.txt"])
    camera = root("/media/*", labels=("DASHCAM",))
    assert accepts(camera, "X", ["dcim"])[0]
    assert accepts(camera, "DASHCAM", [])[0]  # a listed label needs no marker
    taken, why = accepts(camera, "BACKUP", ["Documents"])
    assert not taken and "DCIM" in why
    assert not accepts(root("/m/*", "label", ("CAM",)), "OTHER", ["DCIM"])[0]
    assert accepts(root("/m/*", "any"), "", [])[0]


def test_a_cards_watch_has_the_roots_options_and_its_track_path_rebased() -> None:
    r = MountRootConfig(
        "/media/*",
        WatchConfig(
            path=Path(), ingest="in_place", geotag_source="gpx", geotag_source_path=Path("GPS")
        ),
    )
    w = card_watch(r, "/media/CARD")
    assert w.path == Path("/media/CARD") and w.ingest == "in_place"
    assert w.geotag_source_path == Path("/media/CARD/GPS")


class FakeTable:
    """The mount table as data: a stand-in for /proc/self/mounts (the real one is exercised
    by tests/integration/test_mount_detection.py with real mounts)."""

    def __init__(self) -> None:
        self.mounts: list[Mount] = []
        self.signal = False

    def read(self) -> list[Mount]:
        self.signal = False
        return list(self.mounts)

    def changed(self) -> bool:
        return self.signal

    def close(self) -> None:
        pass


def test_the_monitor_reports_arrivals_and_departures_once(tmp_path: Path) -> None:
    card = tmp_path / "media" / "CARD"
    (card / "DCIM").mkdir(parents=True)
    (tmp_path / "media" / "STICK").mkdir()
    table = FakeTable()
    cfg = MountsConfig(True, (root(f"{tmp_path}/media/*"),), rescan_seconds=30)
    mon = MountMonitor(cfg, table)  # type: ignore[arg-type]
    assert mon.update(0.0) == ([], [])
    table.mounts = [Mount("none", str(card)), Mount("none", str(tmp_path / "media" / "STICK"))]
    assert mon.update(1.0) == ([], [])  # no signal, timer not due: not read
    table.signal = True
    new, gone = mon.update(1.0)
    assert [c.point for c in new] == [str(card)] and gone == []
    assert new[0].label == "CARD"  # no udev label: the mount point's name
    table.signal = True
    assert mon.update(2.0) == ([], [])  # already known
    table.mounts = []
    table.signal = True
    new, gone = mon.update(3.0)
    assert new == [] and [c.point for c in gone] == [str(card)]


def test_mount_roots_are_configured_with_watch_options_and_checked(tmp_path: Path) -> None:
    cfg = build_config(
        {"mount_root": [{"path": "/media/*", "ingest": "in_place", "labels": ["CAM"]}]},
        source="t",
        env={},
        base_dir=tmp_path,
    )
    assert cfg.mounts.enabled
    [r] = cfg.mounts.roots
    assert r.pattern == "/media/*" and r.watch.ingest == "in_place" and r.labels == ("CAM",)
    default = build_config({"mounts": {"enabled": True}}, source="t", env={}, base_dir=tmp_path)
    assert [r.pattern for r in default.mounts.roots][:1] == ["/media/*"]
    assert not build_config({}, source="t", env={}, base_dir=tmp_path).mounts.enabled
    with pytest.raises(ConfigError) as err:
        build_config(
            {
                "mount_root": [
                    {"path": "media/*", "settle_seconds": 1, "require": "label"},
                    {"path": "/m/*", "labels": [1], "nonsense": True},
                ],
                "notify": {"webhook_url": "ftp://x", "heartbeat_interval_seconds": 1},
            },
            source="t",
            env={},
            base_dir=tmp_path,
        )
    assert err.value.problems == [
        "mount_root[0].path: required: an absolute pattern of mount points, such as /media/*",
        'mount_root[0].labels: required with require = "label"',
        "mount_root[0].settle_seconds: must be at least 2",
        "mount_root[1].labels: expected an array of volume labels (strings)",
        "mount_root[1].nonsense: unknown key",
        "notify.webhook_url: must be an http:// or https:// URL",
        "notify.heartbeat_interval_seconds: must be at least 10",
    ]


def test_the_example_config_documents_the_service_keys() -> None:
    text = (REPO / "config.example.toml").read_text()
    for section in ("[mounts]", "[[mount_root]]", "[notify]"):
        assert f"\n{section}\n" in text
    for name in (
        *MountsConfig.__dataclass_fields__,
        "require",
        "labels",
        "webhook_url",
        "webhook_min_interval_seconds",
        "heartbeat_url",
        "heartbeat_interval_seconds",
    ):
        if name != "roots":  # [[mount_root]] tables
            assert f"\n{name} = " in text, f"config.example.toml does not document {name}"


def test_without_proc_mounts_the_folders_under_volumes_are_the_mounts(tmp_path: Path) -> None:
    volumes = tmp_path / "Volumes"
    (volumes / "CARD").mkdir(parents=True)
    (volumes / "Macintosh HD").symlink_to("/")  # the boot volume: a symlink, not a card
    (volumes / "stray.txt").write_text("")
    table = MountTable(proc=tmp_path / "no-proc-here", volumes=volumes)
    assert table.read() == [Mount("", str(volumes / "CARD"), "")]
    assert table.changed() is False  # macOS: the monitor's timer re-lists it


def test_a_cards_options_are_found_from_its_root_pattern_even_after_it_is_gone(
    tmp_path: Path,
) -> None:
    cfg = build_config(
        {
            "watch": [{"path": "/media/FIXED", "ingest": "in_place"}],
            "mount_root": [
                {
                    "path": "/media/*",
                    "offset_angle": 90,
                    "geotag_source": "gpx",
                    "geotag_source_path": "GPS",
                }
            ],
        },
        source="t",
        env={},
        base_dir=tmp_path,
    )
    fixed = watch_at(cfg, "/media/FIXED")  # a [[watch]] wins over a matching root
    assert fixed is not None and fixed.ingest == "in_place" and fixed.offset_angle == 0
    card = watch_at(cfg, "/media/CARD9")  # not mounted now: the pattern still says
    assert card is not None and card.offset_angle == 90
    assert card.geotag_source_path == Path("/media/CARD9/GPS")
    assert watch_at(cfg, "/srv/other") is None
