"""The processing stage as one pure function: photos in, sequences and refusals out.

Shared by the daemon (a closed batch) and ``mapillaryd process`` (the paths given), so both
give the same answer. Steps, in mapillary_tools 0.14.7's order:

1. geotag (:mod:`daemon.geotag`): EXIF, a GPX/NMEA track or a CSV file;
2. plan (:func:`daemon.geo.sequence.plan_sequences`): privacy zones, grouping, cuts,
   duplicates, headings and their offset, speed and zig-zag checks;
3. finalize: ``offset_time`` added to capture times, device make/model overrides.

Nothing here reads files except through what the caller passes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from daemon.geo.sequence import SequenceOptions, Shot, plan_sequences
from daemon.geotag import GeotagOptions, Photo, Placed, Refused, SourceData, geotag_chain


@dataclass(frozen=True)
class ProcessOptions:
    #: Tried in order; see :func:`daemon.geotag.geotag_chain`.
    sources: tuple[GeotagOptions, ...] = (GeotagOptions(),)
    sequence: SequenceOptions = field(default_factory=SequenceOptions)
    #: Seconds added to every final capture time (mapillary_tools' ``--offset_time``).
    offset_time: float = 0.0
    device_make: str | None = None
    device_model: str | None = None


@dataclass(frozen=True)
class Input:
    """A photo with what sequence cutting needs besides its EXIF: where it is and its size."""

    photo: Photo
    folder: str
    filename: str
    size: int


@dataclass(frozen=True)
class Final:
    """One image ready to describe: its final time, position and heading."""

    key: str
    shot: Shot
    alt: float | None
    orientation: int | None


@dataclass
class Outcome:
    sequences: list[list[Final]] = field(default_factory=list)
    refused: dict[str, Refused] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def process(
    inputs: Sequence[Input],
    opts: ProcessOptions,
    data: Sequence[SourceData] | None = None,
) -> Outcome:
    """Geotag, plan and finalize ``inputs``. ``data`` holds what each source's files said, one
    per ``opts.sources`` (default: nothing loaded). Every input ends in exactly one sequence or
    in ``refused`` (keyed by photo key)."""
    data = data if data is not None else [SourceData() for _ in opts.sources]
    if len(data) != len(opts.sources):
        raise ValueError(f"{len(data)} source data for {len(opts.sources)} sources")
    chain = list(zip(opts.sources, data, strict=True))
    tagged = geotag_chain([i.photo for i in inputs], chain)
    outcome = Outcome(notes=list(tagged.notes))
    shots: list[Shot] = []
    extras: dict[str, tuple[float | None, int | None]] = {}
    for i in inputs:
        result = tagged.results[i.photo.key]
        if isinstance(result, Refused):
            outcome.refused[i.photo.key] = result
            continue
        shots.append(_shot(i, result))
        facts = i.photo.facts
        extras[i.photo.key] = (result.alt, facts.orientation if facts else None)
    plan = plan_sequences(shots, opts.sequence)
    for r in plan.rejected:
        outcome.refused[r.key] = Refused(r.reason, r.message)
    shift = timedelta(seconds=opts.offset_time)
    for seq in plan.sequences:
        finals = []
        for s in seq:
            if shift:
                s = replace(s, time=s.time + shift)
            alt, orientation = extras[s.key]
            finals.append(Final(s.key, s, alt, orientation))
        outcome.sequences.append(finals)
    if opts.device_make is not None or opts.device_model is not None:
        outcome.sequences = [
            [_with_device(f, opts.device_make, opts.device_model) for f in seq]
            for seq in outcome.sequences
        ]
    return outcome


def _shot(i: Input, placed: Placed) -> Shot:
    f = i.photo.facts
    return Shot(
        key=i.photo.key,
        folder=i.folder,
        filename=i.filename,
        time=placed.time,
        lat=placed.lat,
        lon=placed.lon,
        heading=placed.heading,
        make=f.make if f else None,
        model=f.model if f else None,
        width=f.width if f else None,
        height=f.height if f else None,
        size=i.size,
        camera_uuid=f.camera_uuid if f else None,
    )


def _with_device(f: Final, make: str | None, model: str | None) -> Final:
    shot = replace(
        f.shot,
        make=make if make is not None else f.shot.make,
        model=model if model is not None else f.shot.model,
    )
    return replace(f, shot=shot)
