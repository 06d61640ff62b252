"""Medians over repeats, the ratios mapillaryd ÷ mapillary_tools, the table and the JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.contenders import MAPILLARY_TOOLS, MAPILLARYD, RunResult


@dataclass(frozen=True)
class Summary:
    """One contender's medians over its runs (``images_per_s`` is frames ÷ median wall)."""

    contender: str
    runs: tuple[RunResult, ...]

    @property
    def frames(self) -> int:
        return self.runs[0].frames

    def median(self, name: str) -> float:
        values = [float(getattr(r, name)) for r in self.runs]
        return float(statistics.median(values))

    @property
    def wall_s(self) -> float:
        return self.median("wall_s")

    @property
    def cpu_s(self) -> float:
        return self.median("cpu_s")

    @property
    def images_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else float("inf")

    def phases(self) -> dict[str, float]:
        """Median seconds of each phase found in every run, in pipeline order."""
        names = [n for n in self.runs[0].phases if all(n in r.phases for r in self.runs)]
        return {n: float(statistics.median(r.phases[n] for r in self.runs)) for n in names}

    def as_json(self) -> dict[str, Any]:
        return {
            "median": {
                "wall_s": self.wall_s,
                "cpu_s": self.cpu_s,
                "cpu_user_s": self.median("cpu_user_s"),
                "cpu_sys_s": self.median("cpu_sys_s"),
                "images_per_s": self.images_per_s,
                "requests": self.median("requests"),
                "bytes_received": self.median("bytes_received"),
                "sandbox_cpu_s": self.median("sandbox_cpu_s"),
                "phases_s": self.phases(),
            },
            "runs": [r.as_json() for r in self.runs],
        }


def summarise(results: Sequence[RunResult]) -> dict[str, Summary]:
    """Group runs by contender (mapillaryd first)."""
    out: dict[str, Summary] = {}
    for name in (MAPILLARYD, MAPILLARY_TOOLS):
        runs = tuple(r for r in results if r.contender == name)
        if runs:
            out[name] = Summary(name, runs)
    return out


def ratios(summaries: dict[str, Summary]) -> dict[str, float]:
    """mapillaryd ÷ mapillary_tools of the medians; below 1 means mapillaryd used less."""
    d, m = summaries[MAPILLARYD], summaries[MAPILLARY_TOOLS]
    return {
        "wall": d.wall_s / m.wall_s,
        "cpu": d.cpu_s / m.cpu_s,
        "requests": d.median("requests") / m.median("requests"),
        "bytes_received": d.median("bytes_received") / m.median("bytes_received"),
    }


def render(meta: dict[str, Any], summaries: dict[str, Summary]) -> str:
    """The table a person reads."""
    repeat = meta["repeat"]
    lines = [
        f"mapillaryd vs mapillary_tools {meta['mapillary_tools_version']}: "
        f"{meta['frames']} frames ({meta['drive_bytes'] / 1e6:.1f} MB of JPEG), "
        f"median of {repeat} run{'s' if repeat != 1 else ''} each, alternating",
        f"machine: {meta['nproc']} CPUs (nproc), {meta['platform']}; "
        f"Python {meta['python']} (mapillaryd), {meta['mapillary_tools_python']} "
        "(mapillary_tools)",
        f"sandbox: {meta['sandbox']}",
        "",
        f"{'contender':<16} {'wall s':>8} {'CPU s':>8} {'images/s':>9} {'requests':>9}"
        f" {'bytes received':>15} {'sandbox CPU s':>14}",
    ]
    for s in summaries.values():
        lines.append(
            f"{s.contender:<16} {s.wall_s:>8.2f} {s.cpu_s:>8.2f} {s.images_per_s:>9.1f}"
            f" {s.median('requests'):>9.0f} {s.median('bytes_received'):>15,.0f}"
            f" {s.median('sandbox_cpu_s'):>14.2f}"
        )
    if MAPILLARYD in summaries and MAPILLARY_TOOLS in summaries:
        r = ratios(summaries)
        lines += [
            "",
            f"mapillaryd ÷ mapillary_tools: wall {r['wall']:.2f}×, CPU {r['cpu']:.2f}×"
            f"  (below 1 = mapillaryd better: less time, less CPU; above 1 = worse)",
            f"                              requests {r['requests']:.2f}×,"
            f" bytes received {r['bytes_received']:.2f}×",
        ]
    lines.append("")
    lines.append("CPU = user+sys of the contender's process tree (wait4); wall = process start")
    lines.append("until every frame is on the sandbox (mapillaryd: queue says done, polled every")
    lines.append(f"{meta['poll_s']:g} s; mapillary_tools: process exit).")
    lines += ["", "where the wall time goes (median seconds per phase, from each one's log):"]
    for s in summaries.values():
        ph = s.phases()
        text = ", ".join(f"{n} {t:.2f}" for n, t in ph.items()) if ph else "(log not understood)"
        lines.append(f"  {s.contender:<16} {text}")
    d = summaries.get(MAPILLARYD)
    if d is not None:
        shutdown = statistics.median(r.shutdown_s or 0.0 for r in d.runs)
        lines.append(
            f"  mapillaryd by design: a {meta['settle_s']:g} s settle window before a file is"
            f" taken, {meta['batch_quiet_s']:g} s batch quiet"
        )
        lines.append(
            "  before a drive is cut; idle workers poll every 0.25-0.5 s;"
            f" SIGTERM→exit {shutdown:.2f} s (CPU only)"
        )
    for s in summaries.values():
        routes = s.runs[-1].requests_by_route
        lines.append("")
        lines.append(f"{s.contender} requests by route (last run):")
        lines += [f"  {n:>6}  {route}" for route, n in routes.items()]
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], summaries: dict[str, Summary]) -> None:
    """Every figure, per run and as medians, with the ratios and the machine."""
    doc: dict[str, Any] = {
        **meta,
        "contenders": {name: s.as_json() for name, s in summaries.items()},
    }
    if MAPILLARYD in summaries and MAPILLARY_TOOLS in summaries:
        doc["ratios_mapillaryd_over_mapillary_tools"] = ratios(summaries)
        doc["ratios_note"] = "below 1: mapillaryd used less (better); above 1: more (worse)"
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
