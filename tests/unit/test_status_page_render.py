"""The status page's HTML and SVG map, rendered from plain values (pure functions)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.status import empty_report
from daemon.web.page import render_page
from daemon.web.svgmap import render_svg
from daemon.web.tracks import Track, thin
from tests.conftest import REPO


class _Collect(HTMLParser):
    """Element ids → their text, and every src/href the page would load."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.loads: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img", "link", "iframe") and (a.get("src") or a.get("href")):
            self.loads.append(str(a.get("src") or a.get("href")))
        if a.get("id"):
            self._open.append(str(a["id"]))
            self.text.setdefault(str(a["id"]), "")
        else:
            self._open.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for name in self._open:
            if name:
                self.text[name] += data


def _report(**changes: Any) -> dict[str, Any]:
    rep = empty_report("")
    rep["generated_at"] = "2026-06-01T12:00:00+00:00"
    rep.update(changes)
    return rep


def _parse(html: str) -> _Collect:
    c = _Collect()
    c.feed(html)
    return c


def test_the_page_shows_the_reports_numbers_and_loads_nothing_from_elsewhere() -> None:
    items = dict(empty_report("")["items"], queued=3, done=40, failed=1)
    rep = _report(
        items=items,
        total=44,
        clusters=[{"sequence": f"s{i}", "cluster_id": f"c{i}", "images": 4} for i in range(12)],
        not_uploaded=[
            {"path": "/card/a.jpg", "state": "failed", "reason": "http_400", "detail": "bad"},
            {"path": "/card/b.jpg", "state": "queued", "reason": "waiting", "detail": ""},
        ],
        uploading=[{"id": 5, "path": "/card/c.jpg", "kind": "image", "sent": 512, "total": 2048}],
        uploaded_bytes=5 * 1024 * 1024,
    )
    page = _parse(render_page(rep, render_svg([])))
    assert page.text["count-queued"] == "3" and page.text["count-done"] == "40"
    assert page.text["total"] == "44"
    assert page.text["clusters-count"] == "12"
    assert page.text["attention-count"] == "1"  # the plain queued one is not a problem
    assert page.text["uploading-count"] == "1"
    assert "512 B of 2.0 KiB" in page.text["uploading"]
    assert "5.0 MiB" in page.text["uploaded-bytes"]
    assert "not configured" in page.text["backup-state"]
    assert "btn-pause" in page.text and "btn-resume" not in page.text
    assert page.loads == []


def test_a_paused_and_held_daemon_says_so_and_offers_resume() -> None:
    rep = _report(
        paused={"since": "2026-06-01T11:00:00+00:00", "by": "status page"},
        hold={"reason": "auth_rejected", "since": "x", "detail": "Mapillary rejected the token"},
        waiting={"by_reason": {"network": 2}, "next_attempt_at": 1_780_000_000.0},
    )
    page = _parse(render_page(rep, render_svg([])))
    assert "by status page" in page.text["paused-banner"]
    assert "auth_rejected" in page.text["hold-banner"]
    assert "2 file(s)" in page.text["offline-banner"]
    assert "btn-resume" in page.text and "btn-pause" not in page.text
    assert page.text["auth-state"] == "held: auth_rejected"


def test_queue_values_are_escaped() -> None:
    evil = '/card/<script>alert("x")</script>.jpg'
    rep = _report(
        not_uploaded=[{"path": evil, "state": "rejected", "reason": "no_gps", "detail": "<b>"}]
    )
    html = render_page(rep, render_svg([]))
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert len(re.findall(r"<script>", html)) == 1  # only the page's own


def test_the_map_is_valid_svg_with_a_line_per_track_and_a_scale_bar() -> None:
    # Two short drives in Ljubljana, about 1.1 km apart.
    a = Track("a" * 32, "done", 3, ((46.05, 14.50), (46.051, 14.501), (46.052, 14.502)))
    b = Track("b" * 32, "failed", 2, ((46.06, 14.51), (46.0605, 14.5105)))
    svg = render_svg([a, b])
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    lines = root.findall(".//s:polyline", ns)
    assert [line.get("stroke") for line in lines] == ["#2a9d8f", "#d62828"]
    for line in lines:
        for pair in str(line.get("points")).split():
            x, y = map(float, pair.split(","))
            assert 0 <= x <= 600 and 0 <= y <= 360  # everything inside the view
    # North is up: the later (more northern) point of a is higher on the map.
    first, last = str(lines[0].get("points")).split()[0], str(lines[0].get("points")).split()[-1]
    assert float(last.split(",")[1]) < float(first.split(",")[1])
    scale = root.find(".//s:g[@class='scale']/s:text", ns)
    assert scale is not None and scale.text in ("200 m", "500 m", "1 km")
    assert "no tracks yet" in render_svg([])


def test_thin_keeps_the_ends_and_at_most_the_maximum() -> None:
    points = [(float(i), 0.0) for i in range(1001)]
    thinned = thin(points, 300)
    assert len(thinned) == 300 and thinned[0] == points[0] and thinned[-1] == points[-1]
    assert thin(points[:5], 300) == points[:5]


# --- [status] configuration ----------------------------------------------------------------------


def test_every_status_key_is_documented_in_the_example() -> None:
    cfg = load_config(REPO / "config.example.toml", env={})
    text = (REPO / "config.example.toml").read_text()
    assert "\n[status]\n" in text
    for name in cfg.status.__dataclass_fields__:
        assert f"\n{name} = " in text, f"config.example.toml does not document status.{name}"


def test_listening_beyond_loopback_needs_a_token_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[status]\nlisten = "0.0.0.0"\nport = 70000\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "status.token_file: required when listen = '0.0.0.0'" in str(err.value)
    assert "status.port: must be 0-65535" in str(err.value)
    path.write_text('[status]\nlisten = "pi.local"\n')
    with pytest.raises(ConfigError, match=r"status.listen: expected an IP address"):
        load_config(path, env={})
    path.write_text('[status]\nlisten = "::"\ntoken_file = "tok"\n')
    cfg = load_config(path, env={})
    assert cfg.status.token_file == tmp_path / "tok" and cfg.status.port == 8686
