"""Geotags from a CSV file: the seed's ``process_csv``.

A contributor who logged positions or capture times in a spreadsheet gives the file and the
column numbers; :func:`read_csv_geotags` returns one :class:`CsvRow` per data line and
:func:`match_csv_rows` pairs them with image files, either by the file-name column or, without
one, by order ("based on the order of image file names": the rows in file order against the
image names sorted).

Columns are **1-based**, as in the seed's ``--filename_column 1 --timestamp_column 4``.
``timestamp_column`` and the latitude/longitude pair may each be None when the CSV carries only
positions or only times; at least one of them must be given.

Timestamps, unless ``time_format`` (a ``strptime`` format) is given, may be:

* epoch numbers: seconds, or milliseconds when ≥ 10¹¹ (after 1973 in ms, after year 5000 in
  s), or microseconds when ≥ 10¹⁴;
* ISO 8601 (``2026-06-01T09:00:00.250+02:00``, ``…Z``);
* EXIF style ``2026:06:01 09:00:00`` with optional ``.fff``;
* mapillary_tools' capture time ``2026_06_01_09_00_00_250``.

A timestamp without a zone is read in ``tz`` (UTC unless told otherwise; the daemon passes the
watch folder's configured camera zone).

The delimiter is sniffed among ``, ; tab |`` unless given; whether the first line is a header
is decided, unless given, by whether it parses as data (its time/latitude/longitude cells do
not, the second line's do).

**Strict**: every bad cell is reported with its line number and column, all of them in one
``ItemError(reason="bad_csv")`` (the first 20, then a count). The file is used whole or not at
all: a skipped row would silently shift every later image when matching by order.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path

from daemon.errors import ItemError

__all__ = [
    "CsvMatch",
    "CsvRow",
    "match_csv_rows",
    "parse_csv_geotags",
    "parse_time",
    "read_csv_geotags",
]

_MAX_LISTED = 20
_NUMBER = re.compile(r"^[+-]?\d+(\.\d*)?$")
_META_TYPES = ("string", "double", "long", "boolean")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class CsvRow:
    """One data line. ``line`` is its 1-based line number in the file (for messages)."""

    line: int
    filename: str | None
    time: datetime | None
    lat: float | None
    lon: float | None
    heading: float | None = None
    altitude: float | None = None
    meta: Mapping[str, str | float | int | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class CsvMatch:
    """Images paired with rows; what was left over on either side."""

    matched: dict[str, CsvRow]
    images_without_row: tuple[str, ...]
    rows_without_image: tuple[CsvRow, ...]


def _bad(name: str, problems: list[str]) -> ItemError:
    listed = "\n".join(f"  {p}" for p in problems[:_MAX_LISTED])
    more = len(problems) - _MAX_LISTED
    tail = f"\n  … and {more} more" if more > 0 else ""
    return ItemError(f"{name}: {len(problems)} problem(s):\n{listed}{tail}", reason="bad_csv")


def _epoch(value: float) -> datetime:
    if abs(value) >= 1e14:
        value /= 1e6
    elif abs(value) >= 1e11:
        value /= 1e3
    return datetime.fromtimestamp(value, UTC)


def parse_time(text: str, time_format: str | None, tz: tzinfo) -> datetime:
    """A CSV timestamp as an aware datetime (see the module docstring); ValueError if not."""
    text = text.strip()
    if time_format is not None:
        parsed = datetime.strptime(text, time_format)  # noqa: DTZ007 - zone added below
    elif _NUMBER.match(text):
        try:
            return _epoch(float(text))
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"epoch time {text!r} out of range") from exc
    else:
        for attempt in (
            datetime.fromisoformat,
            lambda s: datetime.strptime(s, "%Y:%m:%d %H:%M:%S.%f"),  # noqa: DTZ007
            lambda s: datetime.strptime(s, "%Y:%m:%d %H:%M:%S"),  # noqa: DTZ007
            lambda s: datetime.strptime(s, "%Y_%m_%d_%H_%M_%S_%f"),  # noqa: DTZ007
        ):
            try:
                parsed = attempt(text)
                break
            except ValueError:
                continue
        else:
            raise ValueError(
                f"unrecognised time {text!r} (epoch, ISO 8601, 'YYYY:MM:DD HH:MM:SS' or "
                "'YYYY_MM_DD_HH_MM_SS_mmm'; give time_format for anything else)"
            )
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed


def _number(text: str, what: str, low: float | None = None, high: float | None = None) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not a finite number")
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"{what} {value} is not in [{low:g}, {high:g}]")
    return value


def _meta_value(text: str, kind: str) -> str | float | int | bool:
    if kind == "string":
        return text
    if kind == "double":
        return _number(text, "value")
    if kind == "long":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"value {text!r} is not an integer") from None
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"value {text!r} is not a boolean")


@dataclass(frozen=True)
class _Spec:
    filename: int | None
    time: int | None
    lat: int | None
    lon: int | None
    heading: int | None
    altitude: int | None
    meta: Mapping[str, tuple[int, str]]
    time_format: str | None
    tz: tzinfo


def _row(spec: _Spec, cells: list[str], line: int, problems: list[str]) -> CsvRow | None:
    before = len(problems)

    def cell(column: int | None, what: str) -> str | None:
        if column is None:
            return None
        if column > len(cells):
            problems.append(
                f"line {line}: has {len(cells)} column(s), column {column} ({what}) requested"
            )
            return None
        value = cells[column - 1].strip()
        if not value:
            problems.append(f"line {line}: column {column} ({what}) is empty")
            return None
        return value

    def number(column: int | None, what: str, low: float, high: float) -> float | None:
        text = cell(column, what)
        if text is None:
            return None
        try:
            return _number(text, what, low, high)
        except ValueError as exc:
            problems.append(f"line {line}: column {column}: {exc}")
            return None

    filename = cell(spec.filename, "file name")
    when = None
    time_text = cell(spec.time, "timestamp")
    if time_text is not None:
        try:
            when = parse_time(time_text, spec.time_format, spec.tz)
        except ValueError as exc:
            problems.append(f"line {line}: column {spec.time} (timestamp): {exc}")
    lat = number(spec.lat, "latitude", -90.0, 90.0)
    lon = number(spec.lon, "longitude", -180.0, 180.0)
    heading = number(spec.heading, "heading", -360.0, 360.0)
    altitude = number(spec.altitude, "altitude", -1e5, 1e6)
    meta: dict[str, str | float | int | bool] = {}
    for name, (column, kind) in spec.meta.items():
        text = cell(column, name)
        if text is None:
            continue
        try:
            meta[name] = _meta_value(text, kind)
        except ValueError as exc:
            problems.append(f"line {line}: column {column} ({name}): {exc}")
    if len(problems) > before:
        return None
    return CsvRow(
        line=line,
        filename=filename,
        time=when,
        lat=lat,
        lon=lon,
        heading=None if heading is None else heading % 360.0,
        altitude=altitude,
        meta=meta,
    )


def _check_columns(columns: Mapping[str, int | None], meta: Mapping[str, tuple[int, str]]) -> None:
    for what, column in columns.items():
        if column is not None and column < 1:
            raise ValueError(f"{what} is {column}: columns are numbered from 1")
    for name, (column, kind) in meta.items():
        if column < 1:
            raise ValueError(f"meta column {name!r} is {column}: columns are numbered from 1")
        if kind not in _META_TYPES:
            raise ValueError(f"meta column {name!r} has type {kind!r}, not one of {_META_TYPES}")
    if (columns["latitude_column"] is None) != (columns["longitude_column"] is None):
        raise ValueError("latitude_column and longitude_column go together")
    if columns["timestamp_column"] is None and columns["latitude_column"] is None:
        raise ValueError("give timestamp_column, or latitude_column and longitude_column")


def _looks_like_header(spec: _Spec, first: list[str], second: tuple[int, list[str]] | None) -> bool:
    """True when no time or coordinate cell of ``first`` parses, and ``second`` (if any) is data.

    A data line with one typo still has other cells that parse, so it is reported as a bad
    line rather than silently taken for a header.
    """
    for column, parse in (
        (spec.time, lambda s: parse_time(s, spec.time_format, spec.tz)),
        (spec.lat, float),
        (spec.lon, float),
    ):
        if column is None or column > len(first):
            continue
        try:
            parse(first[column - 1])
            return False
        except ValueError:
            pass
    return second is None or _row(spec, second[1], second[0], []) is not None


def parse_csv_geotags(
    text: str,
    name: str,
    *,
    filename_column: int | None,
    timestamp_column: int | None,
    latitude_column: int | None,
    longitude_column: int | None,
    heading_column: int | None = None,
    altitude_column: int | None = None,
    time_format: str | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
    tz: tzinfo = UTC,
    meta_columns: Mapping[str, tuple[int, str]] | None = None,
) -> list[CsvRow]:
    """Rows of CSV ``text`` (see :func:`read_csv_geotags`); ``name`` is used in messages."""
    meta = dict(meta_columns or {})
    _check_columns(
        {
            "filename_column": filename_column,
            "timestamp_column": timestamp_column,
            "latitude_column": latitude_column,
            "longitude_column": longitude_column,
            "heading_column": heading_column,
            "altitude_column": altitude_column,
        },
        meta,
    )
    spec = _Spec(
        filename_column,
        timestamp_column,
        latitude_column,
        longitude_column,
        heading_column,
        altitude_column,
        meta,
        time_format,
        tz,
    )
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    lines: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                lines.append((reader.line_num, cells))
    except csv.Error as exc:
        raise _bad(name, [f"line {reader.line_num}: not readable as CSV ({exc})"]) from exc
    if header is None:
        header = bool(lines) and _looks_like_header(
            spec, lines[0][1], lines[1] if len(lines) > 1 else None
        )
    if header:
        lines = lines[1:]
    if not lines:
        raise _bad(name, ["no data rows"])
    problems: list[str] = []
    rows: list[CsvRow] = []
    seen: dict[str, int] = {}
    for number, cells in lines:
        row = _row(spec, cells, number, problems)
        if row is None:
            continue
        if row.filename is not None:
            key = _basename(row.filename).casefold()
            if key in seen:
                problems.append(
                    f"line {number}: file name {row.filename!r} already on line {seen[key]}"
                )
                continue
            seen[key] = number
        rows.append(row)
    if problems:
        raise _bad(name, problems)
    return rows


def read_csv_geotags(
    path: Path,
    *,
    filename_column: int | None,
    timestamp_column: int | None,
    latitude_column: int | None,
    longitude_column: int | None,
    heading_column: int | None = None,
    altitude_column: int | None = None,
    time_format: str | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
    tz: tzinfo = UTC,
    meta_columns: Mapping[str, tuple[int, str]] | None = None,
) -> list[CsvRow]:
    """One :class:`CsvRow` per data line of the CSV file at ``path``, in file order.

    Columns are 1-based (``ValueError`` for a column below 1 or an unusable combination: a
    configuration mistake, not a bad file). ``meta_columns`` maps a name to (column, type)
    with type ``string``, ``double``, ``long`` or ``boolean``. The file must be UTF-8 (a BOM
    is allowed). Everything wrong with the file is one ``ItemError(reason="bad_csv")``.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _bad(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad(str(path), [f"not UTF-8 text at byte {exc.start}"]) from exc
    return parse_csv_geotags(
        text,
        str(path),
        filename_column=filename_column,
        timestamp_column=timestamp_column,
        latitude_column=latitude_column,
        longitude_column=longitude_column,
        heading_column=heading_column,
        altitude_column=altitude_column,
        time_format=time_format,
        delimiter=delimiter,
        header=header,
        tz=tz,
        meta_columns=meta_columns,
    )


def _basename(name: str) -> str:
    return re.split(r"[\\/]", name)[-1]


def match_csv_rows(rows: Sequence[CsvRow], image_names: Sequence[str]) -> CsvMatch:
    """Pair image file names with rows.

    Rows with file names are matched by base name, exactly or else case-insensitively (a
    camera writes ``IMG_0001.JPG``, a spreadsheet ``img_0001.jpg``); what is left on either
    side is returned. Rows without file names are matched by order: rows in file order
    against ``image_names`` sorted; then the counts must be equal, else
    ``ItemError(reason="bad_csv")`` — a missing row in the middle would shift every later
    image onto its neighbour's position.
    """
    if rows and all(r.filename is None for r in rows):
        names = sorted(image_names)
        if len(names) != len(rows):
            raise ItemError(
                f"{len(rows)} CSV row(s) for {len(names)} image(s): matching by order needs "
                "exactly one row per image (add a file-name column otherwise)",
                reason="bad_csv",
            )
        return CsvMatch(dict(zip(names, rows, strict=True)), (), ())
    by_exact = {_basename(r.filename): r for r in rows if r.filename is not None}
    by_folded = {k.casefold(): r for k, r in by_exact.items()}
    matched: dict[str, CsvRow] = {}
    for image in image_names:
        base = _basename(image)
        row = by_exact.get(base) or by_folded.get(base.casefold())
        if row is not None:
            matched[image] = row
    used = {id(r) for r in matched.values()}
    return CsvMatch(
        matched,
        tuple(i for i in image_names if i not in matched),
        tuple(r for r in rows if id(r) not in used),
    )
