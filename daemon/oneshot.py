"""``mapillaryd process`` and ``process-and-upload``: for people who are not running the daemon.

``process`` reads the images under the given paths, runs the same processing as the daemon
(:func:`daemon.processing.process`) and writes a description file in mapillary_tools' format,
so ``mapillary_tools upload --desc_path`` accepts it. ``process-and-upload`` records the
processed images in the daemon's queue (same identity by content, so nothing already uploaded
goes again) and uploads them with the daemon's uploaders, then exits.

Reading is the slow part (every JPEG is read and parsed); it runs in a process pool when there
are enough files to pay for one.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, TextIO

from daemon.describe import description_file, error_description, image_description
from daemon.errors import ItemError
from daemon.geotag import Photo, Refused, load_source
from daemon.media.csvtrack import CsvRow, read_csv_geotags
from daemon.media.exif import ImageMetadata, read_exif_facts
from daemon.media.writeback import Geotags, Overwrite, with_geotags, write_atomically
from daemon.process_args import BadArguments, CsvSpec, ProcessRequest
from daemon.processing import Final, Input, Outcome, ProcessOptions, process
from daemon.watch import IMAGE_EXTENSIONS

#: Below this many files a process pool costs more than it saves.
POOL_THRESHOLD = 64
DEFAULT_DESC_NAME = "mapillary_image_description.json"


def find_images(paths: Iterable[Path], *, skip_subfolders: bool = False) -> list[Path]:
    """Image files under ``paths`` as mapillary_tools finds them: hidden files and folders
    skipped, each file once, in path order."""
    found: dict[Path, None] = {}
    for root in paths:
        if root.is_file():
            if root.suffix.lower() in IMAGE_EXTENSIONS:
                found[root.resolve()] = None
            continue
        # Walking the resolved folder (os.walk never descends into symlinked folders) gives
        # resolved paths already: only a file that is itself a symlink needs resolving, and
        # an lstat is much cheaper than resolve() on every file.
        for folder, dirs, files in os.walk(root.resolve()):
            dirs[:] = [] if skip_subfolders else sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if (
                    not name.startswith(".")
                    and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
                ):
                    path = Path(folder, name)
                    found[path.resolve() if os.path.islink(path) else path] = None
    return list(found)


def read_input(path: Path, tz: tzinfo, with_hash: bool = False) -> tuple[Input, str | None]:
    """Read one image into an :class:`Input` (and its SHA-256 if asked). Never raises for bad
    files: their problem travels in ``photo.problem``."""
    key = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        err = ItemError(f"{path.name}: cannot read: {exc.strerror}", reason="unreadable")
        return Input(Photo(key, path.name, None, err), str(path.parent), path.name, 0), None
    sha = hashlib.sha256(data).hexdigest() if with_hash else None
    try:
        facts = read_exif_facts(data, path.name, default_tz=tz)  # checks the whole JPEG first
    except ItemError as exc:
        return Input(Photo(key, path.name, None, exc), str(path.parent), path.name, len(data)), sha
    return Input(Photo(key, path.name, facts), str(path.parent), path.name, len(data)), sha


def _read_one(args: tuple[Path, tzinfo, bool]) -> tuple[Input, str | None]:
    return read_input(*args)


def read_inputs(
    paths: Sequence[Path],
    tz: tzinfo,
    *,
    with_hash: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[Input, str | None]]:
    """Read every path (in a process pool for many files), in the order given."""
    jobs = [(p, tz, with_hash) for p in paths]
    out: list[tuple[Input, str | None]] = []
    workers = os.cpu_count() or 1
    if len(jobs) >= POOL_THRESHOLD and workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_read_one, jobs, chunksize=16):
                out.append(result)
                if progress:
                    progress(len(out), len(jobs))
    else:
        for job in jobs:
            out.append(_read_one(job))
            if progress:
                progress(len(out), len(jobs))
    return out


@dataclass
class Report:
    """What processing found: the description entries and the per-file verdicts."""

    inputs: list[Input]
    outcome: Outcome
    entries: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        c: Counter[str] = Counter()
        c["ready"] = sum(len(s) for s in self.outcome.sequences)
        for r in self.outcome.refused.values():
            c[r.reason] += 1
        return c


def final_metadata(f: Final) -> ImageMetadata:
    s = f.shot
    return ImageMetadata(
        capture_time=s.time,
        lat=s.lat,
        lon=s.lon,
        alt=f.alt,
        heading=s.heading,
        make=s.make,
        model=s.model,
        width=s.width,
        height=s.height,
        orientation=f.orientation,
        gps_time_used=False,
        camera_uuid=s.camera_uuid,
    )


def describe_outcome(inputs: Sequence[Input], outcome: Outcome) -> list[dict[str, Any]]:
    """Description entries: accepted images in sequence order (sequence ids "0", "1", … as
    mapillary_tools assigns them), then one error entry per refused image."""
    by_key = {i.photo.key: i for i in inputs}
    entries: list[dict[str, Any]] = []
    for n, seq in enumerate(outcome.sequences):
        for f in seq:
            i = by_key[f.key]
            entries.append(
                image_description(
                    final_metadata(f),
                    filename=i.photo.key,
                    md5sum=None,
                    filesize=i.size,
                    sequence_id=str(n),
                )
            )
    for key in sorted(outcome.refused):
        r: Refused = outcome.refused[key]
        entries.append(error_description(key, r.reason, r.message, extra=r.extra or None))
    return entries


def run_process(
    paths: Sequence[Path],
    opts: ProcessOptions,
    tz: tzinfo,
    *,
    skip_subfolders: bool = False,
    with_hash: bool = False,
    csv: CsvSpec | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Report, dict[str, str]]:
    """Find, read and process the images under ``paths``; return the report and, when asked,
    each image's SHA-256 by key."""
    images = find_images(paths, skip_subfolders=skip_subfolders)
    read = read_inputs(images, tz, with_hash=with_hash, progress=progress)
    inputs = [i for i, _ in read]
    hashes = {i.photo.key: sha for i, sha in read if sha}
    read_csv = None
    if csv is not None:
        spec = csv

        def read_csv(path: Path) -> list[CsvRow]:
            try:
                return read_csv_geotags(
                    path,
                    filename_column=spec.filename_column,
                    timestamp_column=spec.timestamp_column,
                    latitude_column=spec.latitude_column,
                    longitude_column=spec.longitude_column,
                    heading_column=spec.heading_column,
                    altitude_column=spec.altitude_column,
                    time_format=spec.time_format,
                    tz=tz,
                )
            except ValueError as exc:  # impossible column options: the command line is wrong
                raise BadArguments(f"CSV columns: {exc}") from None

    data = [load_source(source, read_csv=read_csv) for source in opts.sources]
    outcome = process(inputs, opts, data)
    return Report(inputs, outcome, describe_outcome(inputs, outcome)), hashes


def default_desc_path(paths: Sequence[Path]) -> str:
    """mapillary_tools' default: inside the one import folder, else standard output."""
    if len(paths) == 1 and paths[0].is_dir():
        return str(paths[0] / DEFAULT_DESC_NAME)
    return "-"


def write_descriptions(entries: list[dict[str, Any]], desc_path: str, out: TextIO) -> None:
    data = description_file(entries)
    if desc_path == "-":
        out.write(data.decode("utf-8") + "\n")
    else:
        write_atomically(Path(desc_path), data)


def write_copies(report: Report, which: Overwrite, copies_dir: Path, roots: Sequence[Path]) -> int:
    """Write each accepted image, with its processed geotags in EXIF, under ``copies_dir``
    (the originals are never touched); return how many were written."""
    by_key = {i.photo.key: i for i in report.inputs}
    n = 0
    for seq in report.outcome.sequences:
        for f in seq:
            src = Path(by_key[f.key].photo.key)
            dest = copies_dir / _relative(src, roots)
            tags = Geotags(
                f.shot.time, f.shot.lat, f.shot.lon, f.alt, f.shot.heading, f.orientation
            )
            write_atomically(dest, with_geotags(src.read_bytes(), src.name, tags, which))
            n += 1
    return n


def _relative(path: Path, roots: Sequence[Path]) -> Path:
    for root in roots:
        root = root.resolve()
        if root.is_dir() and path.is_relative_to(root):
            return path.relative_to(root)
    return Path(path.name)


def print_summary(report: Report, out: TextIO = sys.stderr, *, verbose: bool = False) -> None:
    """mapillary_tools-style process summary, then one line per image not accepted."""
    counts = report.counts()
    total = len(report.inputs)
    print("==> Process summary", file=out)
    print(f"{total} image(s) read in total", file=out)
    print(f"\t{counts.pop('ready', 0)} ready", file=out)
    for reason, n in sorted(counts.items()):
        print(f"\t{n} {reason}", file=out)
    for note in report.outcome.notes:
        print(f"note: {note}", file=out)
    refused = sorted(report.outcome.refused.items())
    shown = refused if verbose else refused[:50]
    for key, r in shown:
        print(f"  {r.reason:<18} {key}\n  {'':<18} {r.message}", file=out)
    if len(refused) > len(shown):
        print(f"  … and {len(refused) - len(shown)} more (--verbose lists all)", file=out)


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, label: str, out: TextIO = sys.stderr) -> None:
        self.label, self.out = label, out
        self.enabled = out.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or (done != total and done % 10):
            return
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done == total else ""
        self.out.write(f"\r{self.label} [{bar}] {done}/{total}{end}")
        self.out.flush()


def cmd_process(req: ProcessRequest, out: TextIO = sys.stdout) -> Report:
    """``mapillaryd process``: process, write the description file (and copies), summarise."""
    report, _ = run_process(
        req.paths,
        req.options,
        req.time_zone,
        skip_subfolders=req.skip_subfolders,
        csv=req.csv,
        progress=Progress("reading"),
    )
    desc_path = req.desc_path or default_desc_path(req.paths)
    write_descriptions(report.entries, desc_path, out)
    if desc_path != "-":
        print(f"description file: {desc_path}", file=sys.stderr)
    if req.overwrite.any():
        copies = req.copies_dir or _default_copies_dir(req.paths)
        n = write_copies(report, req.overwrite, copies, req.paths)
        print(f"{n} geotagged copies written under {copies} (originals untouched)", file=sys.stderr)
    print_summary(report, verbose=req.verbose)
    return report


def _default_copies_dir(paths: Sequence[Path]) -> Path:
    first = paths[0] if paths[0].is_dir() else paths[0].parent
    return first / ".mapillary" / "process_images"
