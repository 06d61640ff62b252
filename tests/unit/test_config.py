"""Configuration: the example parses, every problem is reported at once with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import (
    DEFAULT_GRAPH_ENDPOINT,
    build_config,
    load_config,
    read_toml,
)
from daemon.errors import ConfigError
from tests.conftest import REPO

EXAMPLE = REPO / "config.example.toml"


def test_example_config_parses_and_documents_every_key() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert len(cfg.watches) == 2
    assert cfg.watches[0].ingest == "copy" and cfg.watches[1].ingest == "in_place"
    assert cfg.watches[0].time_zone == "Europe/Ljubljana"
    assert cfg.mapillary.graph_endpoint == DEFAULT_GRAPH_ENDPOINT
    assert cfg.watches[0].geotag_source_path == Path("/media/pi/DASHCAM/GPS")
    assert cfg.privacy_zones[0].name == "home"
    # Every dataclass field has a key in the example (except values that only come from env).
    text = EXAMPLE.read_text()
    for section in (
        cfg.state,
        cfg.watches[0],
        cfg.mapillary,
        cfg.scan,
        cfg.process,
        cfg.upload,
        cfg.log,
        cfg.privacy_zones[0],
    ):
        for name in section.__dataclass_fields__:
            if name in ("token_from_env", "auto_offset"):  # from env / offset_time = "auto"
                continue
            assert f"\n{name} = " in text, f"config.example.toml does not document {name}"


def test_all_problems_are_reported_with_their_key_paths(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
[state]
dri = "/x"
[[watch]]
ingest = "move"
settle_seconds = 0.5
[[watch]]
path = "/cards"
recursive = "yes"
[mapillary]
upload_endpoint = "ftp://x"
token = "secret"
[upload]
max_parallel_uploads = 0
[process]
time_zone = "Mars/Olympus"
[bogus]
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    problems = err.value.problems
    expected = [
        "state.dri: unknown key",
        "watch[0].path: required",
        "watch[0].ingest: must be one of",
        "watch[0].settle_seconds: must be at least 2",
        "watch[1].recursive: expected true or false",
        "mapillary.upload_endpoint: must be an http",
        "mapillary.token: a token does not belong",
        "upload.max_parallel_uploads: must be at least 1",
        "process.time_zone: unknown time zone",
        "bogus: unknown section",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert str(path) in str(err.value)
    assert "secret" not in str(err.value)


def test_environment_overrides_endpoints_and_supplies_the_token(tmp_path: Path) -> None:
    env = {
        "MAPILLARY_UPLOAD_ENDPOINT": "http://127.0.0.1:9/upload/",
        "MAPILLARY_GRAPH_API_ENDPOINT": "http://127.0.0.1:9",
        "MAPILLARY_TOKEN": "s3cr3t-t0ken",
        "STATE_DIRECTORY": "/var/lib/mapillaryd:/other",
    }
    cfg = build_config(
        {"mapillary": {"graph_endpoint": "https://g.example"}},
        source="t",
        env=env,
        base_dir=tmp_path,
    )
    assert cfg.mapillary.upload_endpoint == "http://127.0.0.1:9/upload"
    assert cfg.mapillary.graph_endpoint == "http://127.0.0.1:9"
    assert cfg.mapillary.token_from_env == "s3cr3t-t0ken"
    assert cfg.state.dir == Path("/var/lib/mapillaryd")
    assert cfg.state.spool_dir == Path("/var/lib/mapillaryd/spool")
    assert "s3cr3t-t0ken" not in repr(cfg)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    cfg = build_config(
        {"state": {"dir": "st"}, "watch": [{"path": "cards"}]},
        source="t",
        env={},
        base_dir=tmp_path,
    )
    assert cfg.state.dir == tmp_path / "st"
    assert cfg.watches[0].path == tmp_path / "cards"


def test_duplicate_watch_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"watch\[1\].path: the same folder as watch\[0\]"):
        build_config(
            {"watch": [{"path": "/a"}, {"path": "/a"}]}, source="t", env={}, base_dir=tmp_path
        )


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[state\ndir = 1", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml") as err:
        read_toml(path)
    assert "not valid TOML" in err.value.problems[0]


def test_missing_default_file_means_defaults_but_explicit_missing_file_is_an_error(
    tmp_path: Path,
) -> None:
    cfg = load_config(None, env={"MAPILLARYD_CONFIG": str(tmp_path / "none.toml")})
    assert cfg.source == "<defaults>" and cfg.watches == ()
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml", env={})


def test_track_sources_and_privacy_zones_are_checked(tmp_path: Path) -> None:
    data = {
        "watch": [
            {"path": "/a", "geotag_source": "gpx"},
            {"path": "/b", "offset_time": "auto"},
            {
                "path": "/c",
                "geotag_source": "nmea",
                "geotag_source_path": "log",
                "offset_time": "auto",
            },
            {"path": "/d", "offset_time": "soon"},
        ],
        "privacy_zone": [{"lat": 95, "lon": 1}],
    }
    with pytest.raises(ConfigError) as err:
        build_config(data, source="t", env={}, base_dir=tmp_path)
    problems = err.value.problems
    for prefix in [
        "watch[0].geotag_source_path: required with geotag_source = 'gpx'",
        'watch[1].offset_time: "auto" needs a track',
        'watch[3].offset_time: expected a number of seconds or "auto"',
        "privacy_zone[0].radius_m: required",
        "privacy_zone[0].lat: must be in [-90, 90]",
    ]:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert not any(p.startswith("watch[2]") for p in problems)
