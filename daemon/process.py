"""Processing a closed batch: the shared pipeline (:mod:`daemon.processing`) over its items.

Loads the batch's ingested items, rebuilds their EXIF facts from the queue rows, reads the
watch folder's GPS track when it geotags from one, runs :func:`daemon.processing.process` with
the watch's options, and stores the result in one transaction: each accepted image with its
final time, place and heading in its sequence; each refused one with its reason. Sequences are
named after their content, so repeating a cut after a crash rewrites the same rows. A batch's
videos go through :mod:`daemon.process_videos` first (imported with the first video).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime

import structlog

from daemon.config import Config, WatchConfig
from daemon.geo.privacy import Zone
from daemon.geo.sequence import SequenceOptions
from daemon.geotag import GeotagOptions, Photo, load_source
from daemon.media.exif import ExifFacts
from daemon.mounts import watch_at
from daemon.processing import Input, ProcessOptions, process
from daemon.store.queue import Item, ItemState, Placement, Queue, Verdict
from daemon.video_options import VideoTrackOptions

log = structlog.get_logger(__name__)


#: Refusals a GPS track arriving later can cure: such images are held, not rejected, and
#: processed again when a track file appears or changes in their watch folder.
WAITING_FOR_TRACK = frozenset({"no_track", "outside_track"})


def verdict(reason: str, message: str) -> Verdict:
    """What becomes of an item refused for ``reason``: held when a track arriving later can
    cure it (:data:`WAITING_FOR_TRACK`), else rejected."""
    if reason in WAITING_FOR_TRACK:
        return Verdict(
            ItemState.HELD, reason, f"{message} — kept until a track covering it appears"
        )
    return Verdict(ItemState.REJECTED, reason, message)


def video_track_options(cfg: Config, watch_path: str) -> VideoTrackOptions:
    """Where the videos of the watch folder ``watch_path`` take their GPS track from (the
    defaults for a folder no longer configured)."""
    watch = watch_at(cfg, watch_path)
    if watch is None:
        return VideoTrackOptions()
    local = watch.video_creation_time == "local"
    return VideoTrackOptions(
        source=watch.video_geotag_source,
        pattern=watch.video_geotag_source_path,
        creation_time_zone=cfg.time_zone_for(watch) if local else None,
        offset_time=watch.offset_time,
    )


def sequence_id(shas: list[str]) -> str:
    """A stable name for a sequence: a digest of its members' content hashes, in order."""
    return hashlib.sha256("\n".join(shas).encode()).hexdigest()[:32]


def options_for(cfg: Config, watch: WatchConfig | None) -> ProcessOptions:
    """The processing options of one watch folder (the defaults for an unknown one)."""
    w = watch or WatchConfig(path=cfg.state.dir)
    p = cfg.process
    tracked = w.geotag_source != "exif"
    geotag = GeotagOptions(
        source=w.geotag_source,
        source_path=w.geotag_source_path,
        interpolation_offset_time=w.offset_time if tracked else 0.0,
        use_gps_start_time=w.use_gps_start_time,
        auto_offset=w.auto_offset,
    )
    sequence = SequenceOptions(
        cutoff_time=p.cutoff_time,
        cutoff_distance=p.cutoff_distance,
        max_images=p.max_sequence_images,
        duplicate_distance=p.duplicate_distance,
        duplicate_angle=p.duplicate_angle,
        interpolate_directions=p.interpolate_directions,
        offset_angle=w.offset_angle,
        max_speed_kmh=p.max_speed_kmh,
        zigzag=p.zigzag_check,
        privacy_zones=tuple(Zone(z.lat, z.lon, z.radius_m, z.name) for z in cfg.privacy_zones),
    )
    # The configured offset is the camera's clock error: with a track it moves the lookup
    # (and so the capture time); with EXIF positions it moves only the capture time.
    return ProcessOptions((geotag,), sequence, offset_time=0.0 if tracked else w.offset_time)


def facts_of(item: Item) -> ExifFacts:
    return ExifFacts(
        capture_time=datetime.fromisoformat(item.capture_time) if item.capture_time else None,
        gps_time_used=False,
        lat=item.lat,
        lon=item.lon,
        alt=item.alt,
        heading=item.heading,
        make=item.make,
        model=item.model,
        width=item.width,
        height=item.height,
        orientation=item.orientation if item.orientation is not None else 1,
        camera_uuid=None,
        exif_problem=None,
    )


def input_of(item: Item) -> Input:
    name = os.path.basename(item.source_path)
    photo = Photo(str(item.id), name, facts_of(item))
    return Input(photo, os.path.dirname(item.source_path), name, item.size)


def cut_batch(queue: Queue, batch_id: int, cfg: Config, now: float) -> int:
    """Process the ingested images of closed batch ``batch_id``; return how many sequences."""
    items = queue.ingested_items(batch_id)
    if not items:
        return 0
    watch = watch_at(cfg, items[0].watch)  # a [[watch]], or a card under a [[mount_root]]
    videos = [i for i in items if i.kind == "video"]
    if videos:
        # Imported with the first video, not at the top: the video stack slows the daemon's start.
        from daemon import process_videos

        if watch is not None and watch.video == "frames":
            process_videos.sample_videos(queue, batch_id, videos, cfg, watch, now)
            videos = []
        else:
            process_videos.cut_videos(queue, batch_id, videos, cfg, now)
    items = [i for i in queue.ingested_items(batch_id) if i.kind != "video"]
    if not items:
        return len(videos)
    opts = options_for(cfg, watch)
    data = [load_source(source) for source in opts.sources]
    outcome = process([input_of(i) for i in items], opts, data)
    by_key = {str(i.id): i for i in items}
    sequences = []
    for seq in outcome.sequences:
        placements = [
            Placement(
                item_id=int(f.key),
                capture_time=f.shot.time.isoformat(),
                lat=f.shot.lat,
                lon=f.shot.lon,
                alt=f.alt,
                heading=f.shot.heading,
            )
            for f in seq
        ]
        sequences.append((sequence_id([by_key[f.key].sha256 for f in seq]), placements))
    rejected = [(int(key), verdict(r.reason, r.message)) for key, r in outcome.refused.items()]
    queue.assign_sequences(batch_id, sequences, rejected, now, outcome.notes)
    for note in outcome.notes:
        log.info("processing_note", batch=batch_id, note=note)
    log.info(
        "batch_processed",
        batch=batch_id,
        images=sum(len(s) for _, s in sequences),
        sequences=len(sequences),
        refused=len(rejected),
    )
    return len(sequences)
