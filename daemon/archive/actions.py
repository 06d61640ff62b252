"""What the archive's commands (:mod:`daemon.archive.commands`) do, each on a loaded config.

:func:`run_command` runs the one in ``args`` and returns its exit code (the codes are those of
:mod:`daemon.archive.commands`). Apart from the parser so that building ``mapillaryd``'s
parser does not import the archive stack.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.archive.job import RunBusy, RunResult
from daemon.archive.meta import LIST_FIELDS, ImageMeta, parse_image, safe_id
from daemon.archive.progress import Bar
from daemon.archive.runner import NoToken, Options, open_job, run_backup
from daemon.archive.summary import backup_summary
from daemon.config import Config
from daemon.errors import AuthError, UploadError

BATCH = 50


def run_command(cfg: Config, args: argparse.Namespace) -> int:
    """Run ``backup``, ``download`` or ``sequences`` as ``args`` says; its exit code."""
    try:
        if args.command == "backup":
            return _backup(cfg, args)
        if args.command == "download":
            return _download(cfg, args)
        return _sequences(cfg, args)
    except NoToken as exc:
        print(f"mapillaryd: {exc}", file=sys.stderr)
        return 4
    except RunBusy as exc:
        print(f"mapillaryd: {exc}", file=sys.stderr)
        return 1


def _report(result: RunResult, as_json: bool, failed_file: Path | None) -> int:
    if failed_file is not None:
        failed_file.write_text("".join(f"{i}\n" for i in result.failed_ids), encoding="utf-8")
    if as_json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print(
            f"{result.result}: {result.listed} listed, {result.downloaded} downloaded"
            f" ({result.bytes / 1e6:.1f} MB), {result.skipped} already archived,"
            f" {result.failed} failed, {result.deleted_on_server} newly deleted on Mapillary"
        )
    if result.reason:
        print(f"mapillaryd: backup {result.result}: {result.reason}", file=sys.stderr)
    return result.exit_code


def _backup(cfg: Config, args: argparse.Namespace) -> int:
    if args.backup_command == "status":
        summary = backup_summary(cfg)
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(_render_status(summary))
        return 0
    if cfg.backup is None:
        print(
            f"mapillaryd: {cfg.source}: no [backup] table (add one with dir = ...)", file=sys.stderr
        )
        return 2
    result = run_backup(cfg, progress=None if args.json else Bar())
    return _report(result, args.json, args.failed_file)


def _render_status(s: dict[str, Any]) -> str:
    if not s.get("configured"):
        return "backup: not configured (no [backup] table)"
    lines = [f"backup of {s.get('username') or 'the token owner'} into {s['dir']}"]
    lines.append(f"schedule:  {s['schedule']} ({s['time_zone']}), next run {s.get('next_run')}")
    last = s.get("last_run")
    if last:
        lines.append(
            f"last run:  {last['result']} (started {last['started_at']}, finished"
            f" {last['finished_at']}): {last['downloaded']} downloaded, {last['failed']} failed"
        )
    else:
        lines.append("last run:  never")
    if s.get("failure"):
        lines.append(f"FAILED:    {s['failure']}")
    counts = s.get("counts")
    if counts:
        lines.append(
            f"archive:   {counts['archived']} of {counts['known']} images"
            f" ({counts['archived_bytes'] / 1e6:.1f} MB), {counts['deleted_on_server']} deleted"
            f" on Mapillary, {counts['failed']} failing"
        )
    return "\n".join(lines)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _download(cfg: Config, args: argparse.Namespace) -> int:
    ids = _split(args.image)
    if args.image_file is not None:
        try:
            text = args.image_file.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"mapillaryd: --image-file {args.image_file}: {exc.strerror}", file=sys.stderr)
            return 2
        ids += [
            line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()
        ]
    sequences = _split(args.sequence)
    bad = [i for i in ids + sequences if safe_id(i) is None]
    if bad:
        print(f"mapillaryd: not an image or sequence id: {bad[0]!r}", file=sys.stderr)
        return 2
    bbox = None
    if args.bbox:
        try:
            bbox = [float(x) for x in args.bbox.split(",")]
            if len(bbox) != 4:
                raise ValueError
        except ValueError:
            print("mapillaryd: --bbox must be west,south,east,north", file=sys.stderr)
            return 2
    if not (ids or sequences or bbox):
        print(
            "mapillaryd: nothing to download: give --image, --image-file, --sequence or --bbox",
            file=sys.stderr,
        )
        return 2
    base = Options.from_config(cfg.backup) if cfg.backup else None
    root = args.output or (base.root if base else None)
    if root is None:
        print("mapillaryd: --output is required without a [backup] table", file=sys.stderr)
        return 2
    opts = Options(
        root=root,
        username=args.username,
        quality=args.quality or (base.quality if base else "original"),
        fmt="webp" if args.webp else (base.fmt if base else "jpeg"),
        webp_quality=base.webp_quality if base else 90,
        tar=args.tar or (base.tar if base else False),
        workers=args.workers or (base.workers if base else 4),
        rate=base.rate if base else 50.0,
        retries=base.retries if base else 5,
        timeout=base.timeout if base else 60.0,
        min_free_mb=base.min_free_mb if base else 500.0,
    )

    def accept(m: ImageMeta) -> bool:
        if args.filter == "360":
            return m.is_pano
        if args.filter == "regular":
            return not m.is_pano
        return True

    with open_job(cfg, opts, progress=None if (args.json or args.dry_run) else Bar()) as job:
        client = job.client

        def metas() -> list[dict[str, Any]]:
            wanted = list(ids)
            for seq in sequences:
                wanted += client.image_ids(seq)
            out: list[dict[str, Any]] = []
            fields = ",".join(LIST_FIELDS)
            for i in range(0, len(wanted), BATCH):
                out += client.search(
                    {"image_ids": ",".join(wanted[i : i + BATCH]), "fields": fields}
                )
            if bbox is not None:
                params = {"bbox": ",".join(map(str, bbox)), "fields": fields, "limit": "2000"}
                if args.username:
                    params["creator_username"] = args.username
                out += client.search(params)
            seen: set[str] = set()
            unique = []
            for r in out:
                if r.get("id") not in seen:
                    seen.add(str(r.get("id")))
                    unique.append(r)
            return unique

        try:
            if args.dry_run:
                return _dry_run(job, metas(), accept, args.json)
            result = job.run_items(args.username, metas, accept)
        except AuthError as exc:
            print(f"mapillaryd: token rejected: {exc}", file=sys.stderr)
            return 4
        except UploadError as exc:
            print(f"mapillaryd: Mapillary API: {exc}", file=sys.stderr)
            return 1
    return _report(result, args.json, args.failed_file)


def _dry_run(job: Any, raws: list[dict[str, Any]], accept: Any, as_json: bool) -> int:
    metas = []
    for r in raws:
        try:
            m = parse_image(r)
        except ValueError:
            continue
        if accept(m):
            metas.append(m)
    todo = [m for m in metas if job.index.archived_path(m.id) is None]
    sample = 0
    if todo:
        user = todo[0].creator_username or "unknown-user"
        sample = len(job.downloader_for(user).fetch_checked(todo[0]))
    estimate = sample * len(todo)
    doc = {
        "images": len(metas),
        "already_archived": len(metas) - len(todo),
        "to_download": len(todo),
        "estimated_bytes": estimate,
        "sequences": len({m.sequence for m in todo}),
    }
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"dry run: {doc['images']} images ({doc['already_archived']} already archived),"
            f" {doc['to_download']} to download in {doc['sequences']} sequence(s),"
            f" about {estimate / 1e6:.1f} MB (from one sample image)"
        )
    return 0


def _sequences(cfg: Config, args: argparse.Namespace) -> int:
    opts = Options(root=cfg.backup.dir if cfg.backup else cfg.state.dir / "archive-unused")
    fields = ["id", "sequence", "captured_at", "camera_type", "is_pano"]
    by_seq: dict[str, dict[str, Any]] = {}
    with open_job(cfg, opts) as job:
        try:
            url: str | None = None
            while True:
                page, url = job.client.list_page(url, args.user, fields, 2000)
                for r in page:
                    seq = r.get("sequence")
                    if not isinstance(seq, str):
                        continue
                    pano = r.get("is_pano") is True or r.get("camera_type") in (
                        "spherical",
                        "equirectangular",
                    )
                    entry = by_seq.setdefault(
                        seq, {"sequence": seq, "images": 0, "first": None, "pano": pano}
                    )
                    entry["images"] += 1
                    t = r.get("captured_at")
                    if isinstance(t, int) and (entry["first"] is None or t < entry["first"]):
                        entry["first"] = t
                if url is None:
                    break
        except AuthError as exc:
            print(f"mapillaryd: token rejected: {exc}", file=sys.stderr)
            return 4
    rows = [
        e
        for e in by_seq.values()
        if args.filter == "all" or (args.filter == "360") == bool(e["pano"])
    ]
    rows.sort(key=lambda e: e["first"] or 0, reverse=True)
    if args.json:
        text = json.dumps(rows, indent=2) + "\n"
    else:
        days: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in rows:
            day = (
                datetime.fromtimestamp(e["first"] / 1000, UTC).strftime("%Y%m%d")
                if e["first"]
                else "unknown"
            )
            days[day].append(e)
        lines = [f"# sequences of {args.user} (filter: {args.filter}), newest first: {len(rows)}"]
        for day, entries in days.items():
            lines.append(f"# {day}")
            lines += [
                f"{e['sequence']}  # {e['images']} images{' 360' if e['pano'] else ''}"
                for e in entries
            ]
        text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    return 0
