"""Read a GPX file into a :class:`~daemon.geo.track.Track` (gpxpy at the boundary).

What is kept: every ``<trkseg>`` of every ``<trk>`` becomes one segment of the track, so a
multi-track file keeps each track's segments apart (mapillary_tools merges them all into one
list, #129). Routes (``<rte>``) and waypoints (``<wpt>``) are ignored: they are plans and
landmarks, not a timed record of where the logger was (mapillary_tools ignores them too, #448);
the notes say how many were ignored.

What is dropped, each counted in :attr:`Track.notes`:

* points without a ``<time>`` (gpxpy also gives None for a time it cannot parse);
* points timed before 1980-01-06, the GPS epoch: no satellite fix carries such a time, and
  loggers whose clock underflowed write 1901-12-13 (``gpxpy__Mojstrovka.gpx``);
* points with a latitude or longitude out of range;
* segments left empty.

A file where most track points have no time is refused rather than reduced to its few timed
points (``gpxpy__cerknicko-without-times.gpx``: 5 of 296): it is a drawn or stripped route,
and the handful of timed points would silently stand for the whole drive.

Times: GPX times are UTC by the schema; a time without a zone is therefore read as UTC
(mapillary_tools reads it in the zone of the machine it runs on). Times with an offset are
converted to UTC. Points are sorted by time within each segment (some writers store them in
reverse: ``exiftool__Geotag.gpx``).

Encoding: a UTF-8 byte-order mark is skipped (as mapillary_tools does), UTF-16 with a BOM is
decoded, otherwise the encoding of the XML declaration is used (UTF-8 by default).
mapillary_tools reads every file in the locale's encoding, so a UTF-16 or an ISO-8859-2 file
with a non-ASCII track name fails there with a UnicodeDecodeError.

Every problem is an :class:`~daemon.errors.ItemError` with ``reason="bad_gpx"`` whose
message names the file and what is wrong (cannot be read, not UTF-8, not XML at line N
column M, no ``<gpx>`` element, a bad value, no tracks, no timed points …). No other
exception leaves :func:`read_gpx`.
"""

from __future__ import annotations

import codecs
import math
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gpxpy
import gpxpy.gpx

from daemon.errors import ItemError
from daemon.geo.track import Track, TrackPoint

__all__ = ["GPS_EPOCH", "decode_xml", "parse_gpx", "read_gpx"]

#: The first moment a GPS receiver can report (1980-01-06T00:00:00Z).
GPS_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)

_DECLARED = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_GPX_ROOT = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?gpx[\s>/]")


def _bad(path: Path | str, what: str) -> ItemError:
    return ItemError(f"{path}: {what}", reason="bad_gpx")


def decode_xml(data: bytes, name: str, reason: str) -> str:
    """XML bytes as text: BOM first, then the declared encoding, UTF-8 by default.

    Raises ``ItemError(reason=reason)`` naming ``name`` when the bytes do not decode.
    """
    if data.startswith(codecs.BOM_UTF8):
        encoding, body = "utf-8", data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, body = "utf-16", data
    else:
        match = _DECLARED.match(data.lstrip()[:200])
        encoding, body = (match.group(1).decode("ascii") if match else "utf-8"), data
    try:
        return body.decode(encoding)
    except LookupError:  # unknown, or not a text encoding ("rot13", "hex")
        raise ItemError(
            f"{name}: unknown text encoding {encoding!r} in the XML declaration", reason=reason
        ) from None
    except UnicodeDecodeError as exc:
        raise ItemError(
            f"{name}: not valid {encoding} text at byte {exc.start}", reason=reason
        ) from exc
    except (UnicodeError, ValueError) as exc:  # codecs such as idna raise plain UnicodeError
        raise ItemError(f"{name}: not valid {encoding} text ({exc})", reason=reason) from exc


def _xml_error(exc: BaseException) -> str:
    cause = exc.__cause__
    position = getattr(cause, "position", None)
    if isinstance(position, tuple) and len(position) == 2:
        line, column = position
        detail = str(cause).split(":")[0]
        return f"not well-formed XML at line {line}, column {column} ({detail})"
    return f"not well-formed XML ({cause or exc})"


def _point(raw: Any, counts: Counter[str]) -> TrackPoint | None:
    when = raw.time
    if when is None:
        counts["without a time"] += 1
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=UTC)  # GPX times are UTC by the schema
    try:
        when = when.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last representable UTC
        counts["with a time out of range"] += 1
        return None
    if when < GPS_EPOCH:
        counts["timed before 1980-01-06 (the GPS epoch)"] += 1
        return None
    lat, lon, ele = raw.latitude, raw.longitude, raw.elevation
    if not (
        isinstance(lat, float | int)
        and isinstance(lon, float | int)
        and math.isfinite(lat)
        and math.isfinite(lon)
        and -90 <= lat <= 90
        and -180 <= lon <= 180
    ):
        counts["with a position out of range"] += 1
        return None
    alt = float(ele) if isinstance(ele, float | int) and math.isfinite(ele) else None
    return TrackPoint(when, float(lat), float(lon), alt, None)


def parse_gpx(text: str, name: str) -> Track:
    """The track in GPX ``text``; ``name`` is used in messages and as the track's source."""
    if not _GPX_ROOT.search(text):
        raise _bad(name, "not a GPX document (no <gpx> element)")
    try:
        gpx = gpxpy.parse(text)
    except gpxpy.gpx.GPXXMLSyntaxException as exc:
        raise _bad(name, _xml_error(exc)) from exc
    except gpxpy.gpx.GPXException as exc:
        raise _bad(name, f"invalid GPX content: {exc}") from exc
    except Exception as exc:  # gpxpy raises whatever its field parsers raise
        raise _bad(name, f"invalid GPX content: {type(exc).__name__}: {exc}") from exc

    counts: Counter[str] = Counter()
    naive = 0
    segments: list[list[TrackPoint]] = []
    empty_segments = 0
    total = 0
    for trk in gpx.tracks:
        for seg in trk.segments:
            kept: list[TrackPoint] = []
            for raw in seg.points:
                total += 1
                if raw.time is not None and raw.time.tzinfo is None:
                    naive += 1
                point = _point(raw, counts)
                if point is not None:
                    kept.append(point)
            if kept:
                segments.append(kept)
            else:
                empty_segments += 1

    ignored = []
    if gpx.routes:
        ignored.append(f"{len(gpx.routes)} route(s)")
    if gpx.waypoints:
        ignored.append(f"{len(gpx.waypoints)} waypoint(s)")
    ignored_text = f" ({' and '.join(ignored)} ignored: only tracks are timed)" if ignored else ""
    if not gpx.tracks:
        raise _bad(name, f"no tracks (<trk>){ignored_text}")
    if total == 0:
        raise _bad(name, f"{len(gpx.tracks)} track(s) but no track points{ignored_text}")
    dropped = "; ".join(f"{n} {why}" for why, n in counts.items() if n)
    if not segments:
        raise _bad(name, f"no timed track points: all {total} point(s) dropped ({dropped})")
    untimed = counts["without a time"]
    if untimed * 2 > total:
        usable = total - sum(counts.values())
        raise _bad(
            name,
            f"{untimed} of {total} track points have no time (only {usable} usable): a route "
            "drawn or stripped of its times, not a recording; it cannot place images by time",
        )

    notes = [f"{n} of {total} track points {why} were dropped" for why, n in counts.items() if n]
    if naive:
        notes.append(f"{naive} track point times had no zone and were read as UTC")
    if empty_segments:
        notes.append(f"{empty_segments} track segment(s) without usable points were skipped")
    notes.extend(f"{what} ignored" for what in ignored)
    return Track.from_segments(segments, name, notes)


def read_gpx(path: Path) -> Track:
    """The track in the GPX file at ``path``; ``ItemError(reason="bad_gpx")`` if unusable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _bad(path, f"cannot read: {exc.strerror or exc}") from exc
    if not data.strip():
        raise _bad(path, "empty file")
    return parse_gpx(decode_xml(data, str(path), "bad_gpx"), str(path))
