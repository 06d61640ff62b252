"""Processing the videos of a closed batch: each native video checked, trimmed and placed as
sequences of its own, or sampled into geotagged frames (``video = "frames"``).

Called by :func:`daemon.process.cut_batch` when a batch holds videos. This module carries the
video stack (MP4, CAMM, GPMF, BlackVue, ffmpeg sampling, trimming), so ``daemon.process``
imports it on the first batch with a video, never at the daemon's start.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, timedelta
from pathlib import Path

import structlog

from daemon.config import Config, WatchConfig
from daemon.errors import ItemError
from daemon.geo.privacy import Zone
from daemon.geo.video_limits import VideoPoint, VideoRefusal, check_video
from daemon.geo.video_trim import PRIVACY, TrimOptions, TrimPlan, plan_trim
from daemon.ingest import read_outcome
from daemon.media.camm_mp4 import read_clip_source
from daemon.media.sampling import FfmpegMissingError, sample_video
from daemon.media.video import VideoTrack
from daemon.process import sequence_id, verdict, video_track_options
from daemon.store.queue import Clip, Item, ItemState, Metadata, NewFile, Placement, Queue, Verdict
from daemon.video_track import video_track_at

log = structlog.get_logger(__name__)


def trim_options(cfg: Config) -> TrimOptions:
    """How native videos are trimmed: the privacy zones and the [process] trim_* keys."""
    p = cfg.process
    return TrimOptions(
        zones=tuple(Zone(z.lat, z.lon, z.radius_m, z.name) for z in cfg.privacy_zones),
        parked_seconds=p.trim_parked_seconds,
        parked_radius_m=p.trim_parked_radius_m,
        min_clip_seconds=p.trim_min_seconds,
        margin_m=p.trim_margin_m,
        margin_s=p.trim_margin_seconds,
        max_speed_mps=p.max_speed_kmh / 3.6,
    )


def trim_plan(
    path: str, name: str, vt: VideoTrack, points: Sequence[VideoPoint], options: TrimOptions
) -> TrimPlan | VideoRefusal:
    """The trim plan of the video at ``path``, or why it is not uploaded at all.

    The keyframes are read (the video's sample tables) only when something is to be cut. A
    video that cannot be cut (an edit list a clip cannot follow, a broken sample table) is
    refused when it could show a privacy zone, and uploaded whole when it only stands parked.
    """
    end = vt.duration_s or max(p.time_s for p in points)
    rough = plan_trim(points, (), end, options)
    if rough.whole:
        return rough
    try:
        with open(path, "rb") as fileobj:
            clip = read_clip_source(fileobj, name, info=vt.info)
    except (ItemError, OSError) as exc:
        why = f"cannot read: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
        zones = sorted({c.label for c in rough.cuts if c.reason == PRIVACY})
        if zones:
            return VideoRefusal(
                PRIVACY, f"{name}: could show {', '.join(zones)} and cannot be trimmed: {why}"
            )
        log.warning("video_not_trimmed", path=path, why=why)
        return plan_trim(points, (), end, TrimOptions(parked_seconds=0))
    plan = plan_trim(points, clip.keyframes(), clip.end_s(), options)
    return plan.refusal(name) or plan


def clip_key(sha256: str, start_s: float, end_s: float) -> str:
    """The identity of a clip of the video with content ``sha256``: the same window of the
    same bytes always gives the same key (and so the same queue row and sequence)."""
    return hashlib.sha256(f"{sha256}\nclip {start_s!r} {end_s!r}".encode()).hexdigest()


def _clips(item: Item, vt: VideoTrack, plan: TrimPlan) -> list[Clip]:
    clips = []
    for window in plan.windows:
        first = next((p for p in vt.points if p.time_s >= window.start_s), vt.points[-1])
        when = vt.start_time + timedelta(seconds=window.start_s)
        key = clip_key(item.sha256, window.start_s, window.end_s)
        placement = Placement(item.id, when.isoformat(), first.lat, first.lon, first.alt, None)
        clips.append(Clip(key, sequence_id([key]), window.start_s, window.end_s, placement))
    return clips


def cut_videos(queue: Queue, batch_id: int, videos: list[Item], cfg: Config, now: float) -> None:
    """Each video is a sequence of its own (uploaded natively as CAMM), unless its track breaks
    a video limit. One that enters a privacy zone or stands parked for long is trimmed: each
    kept stretch becomes a clip, a video item and sequence of its own (refused when none is
    left)."""
    options = trim_options(cfg)
    sequences = []
    rejected = []
    clips: list[Clip] = []
    notes: list[str] = []
    for item in videos:
        name = os.path.basename(item.source_path)
        try:
            vt = video_track_at(item.data_path, video_track_options(cfg, item.watch))
        except ItemError as exc:
            rejected.append((item.id, verdict(exc.reason, str(exc))))
            continue
        points = [VideoPoint(p.time_s, p.lat, p.lon, p.epoch_s) for p in vt.points]
        refusal = check_video(name, points, item.size, max_speed_kmh=cfg.process.max_speed_kmh)
        plan = refusal or trim_plan(item.data_path, name, vt, points, options)
        if isinstance(plan, VideoRefusal):
            rejected.append((item.id, Verdict(ItemState.REJECTED, plan.reason, plan.message)))
            continue
        if not plan.whole:
            note = f"{name}: {plan.note()}"
            notes.append(note)
            clips += _clips(item, vt, plan)
            rejected.append((item.id, Verdict(ItemState.TRIMMED, "trimmed", note)))
            log.info("video_trimmed", item=item.id, path=item.source_path, note=plan.note())
            continue
        first = vt.points[0]
        placement = Placement(
            item.id, vt.start_time.isoformat(), first.lat, first.lon, first.alt, None
        )
        sequences.append((sequence_id([item.sha256]), [placement]))
    queue.assign_sequences(batch_id, sequences, rejected, now, notes, clips=clips)
    log.info(
        "videos_processed",
        batch=batch_id,
        native=len(sequences),
        clips=len(clips),
        refused=len(rejected) - len(notes),
    )


def sample_videos(
    queue: Queue, batch_id: int, videos: list[Item], cfg: Config, watch: WatchConfig, now: float
) -> None:
    """``video = "frames"``: sample each video with ffmpeg into geotagged JPEGs in the spool and
    add them to this batch as images (privacy zones, duplicates and cuts then apply to them as
    to any photo). Without ffmpeg the videos are held, not failed."""
    verdicts = []
    for item in videos:
        out = cfg.state.spool_dir / "frames" / item.sha256[:32]
        try:
            paths = sample_video(
                Path(item.data_path),
                out,
                distance_m=None if watch.video_sample_interval else watch.video_sample_distance,
                interval_s=watch.video_sample_interval,
                track=video_track_at(item.data_path, video_track_options(cfg, item.watch)),
            )
        except FfmpegMissingError as exc:
            verdicts.append((item.id, Verdict(ItemState.HELD, exc.reason, str(exc))))
            continue
        except ItemError as exc:
            verdicts.append((item.id, verdict(exc.reason, str(exc))))
            continue
        frames = []
        for p in paths:
            meta = read_outcome("image", str(p), p.name, UTC)
            if isinstance(meta, Metadata):
                st = p.stat()
                sha = hashlib.sha256(p.read_bytes()).hexdigest()
                f = NewFile(item.watch, str(p), st.st_size, st.st_mtime_ns, sha, "image", str(p))
                frames.append((f, meta))
        added = queue.add_frames(batch_id, item.id, frames, now)
        log.info("video_sampled", item=item.id, path=item.source_path, frames=added)
    if verdicts:
        queue.assign_sequences(batch_id, [], verdicts, now)
