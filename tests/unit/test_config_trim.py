"""The [process] trim_* keys of native video trimming: defaults, values, problems by key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import build_config
from daemon.errors import ConfigError
from daemon.process_videos import trim_options


def test_defaults_and_values_reach_the_trim_options(tmp_path: Path) -> None:
    cfg = build_config({}, source="t", env={}, base_dir=tmp_path)
    opts = trim_options(cfg)
    assert (opts.parked_seconds, opts.parked_radius_m, opts.min_clip_seconds) == (120, 10, 5)
    assert (opts.margin_m, opts.margin_s, opts.zones) == (10, 1, ())
    assert opts.max_speed_mps == pytest.approx(400 / 3.6)
    cfg = build_config(
        {
            "process": {
                "trim_parked_seconds": 0,
                "trim_parked_radius_m": 25,
                "trim_min_seconds": 8.5,
                "trim_margin_m": 0,
                "trim_margin_seconds": 2,
                "max_speed_kmh": 180,
            },
            "privacy_zone": [{"name": "home", "lat": 46.05, "lon": 14.5, "radius_m": 150}],
        },
        source="t",
        env={},
        base_dir=tmp_path,
    )
    opts = trim_options(cfg)
    assert (opts.parked_seconds, opts.parked_radius_m, opts.min_clip_seconds) == (0, 25, 8.5)
    assert (opts.margin_m, opts.margin_s, opts.max_speed_mps) == (0, 2, 50)
    assert [(z.name, z.radius_m) for z in opts.zones] == [("home", 150)]


def test_bad_values_are_reported_with_their_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(
            {
                "process": {
                    "trim_parked_seconds": -1,
                    "trim_parked_radius_m": 0,
                    "trim_min_seconds": "long",
                    "trim_margin_m": -5,
                    "trim_margin_seconds": -0.5,
                }
            },
            source="t",
            env={},
            base_dir=tmp_path,
        )
    assert sorted(err.value.problems) == [
        "process.trim_margin_m: must be at least 0",
        "process.trim_margin_seconds: must be at least 0",
        "process.trim_min_seconds: expected a number, got str 'long'",
        "process.trim_parked_radius_m: must be greater than 0",
        "process.trim_parked_seconds: must be at least 0",
    ]
