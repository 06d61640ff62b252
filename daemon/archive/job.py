"""One backup (or one-shot download) run, from listing to the last sidecar.

A run: take the archive's lock (one run at a time per archive, daemon or CLI) → record the run
→ remove temporaries a killed run left → resolve the user (config, else ``/me``) → list: a
listing pass continued from its last committed page, or a new one (each page committed with
the next page's URL) → download every known image not archived yet with ``workers`` threads →
write the sidecars of the sequences touched, pack finished sequences (``tar``) → record the
result.

Results: ``ok``; ``partial`` (some images failed: listed in the index and ``--failed-file``,
tried again next run); ``failed`` with a reason (token rejected: stopped at the first 401, no
retry storm; disk full: stopped before writing, resumes where it stopped; the API unreachable
after the retries). A run killed at any moment resumes on the next one with nothing lost or
duplicated.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from daemon import errors
from daemon.archive import sidecar, tarball
from daemon.archive.client import ArchiveClient, GraphError
from daemon.archive.download import URL_BATCH, Downloader, ItemFailed, Saved
from daemon.archive.files import DiskFullError, sweep_partials, write_atomic
from daemon.archive.index import ArchiveIndex
from daemon.archive.layout import sequence_dir, sidecar_path, tar_path
from daemon.archive.meta import LIST_FIELDS, ImageMeta, parse_image
from daemon.clock import Clock

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_AUTH = 0, 1, 4


class RunBusy(Exception):
    """Another run holds this archive's lock."""


@dataclass
class RunResult:
    """What a run did. ``exit_code``: 0 ok, 1 failed or partial, 4 token rejected."""

    result: str = "running"
    reason: str | None = None
    username: str | None = None
    listed: int = 0
    pages: int = 0
    downloaded: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    deleted_on_server: int = 0
    failed_ids: list[str] = field(default_factory=list)
    requests: int = 0

    @property
    def exit_code(self) -> int:
        if self.result == "ok":
            return EXIT_OK
        return (
            EXIT_AUTH if self.reason and self.reason.startswith("token rejected") else EXIT_FAILED
        )

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "exit_code": self.exit_code}


#: Progress events: ("listed", n_total) / ("image", n_bytes) / ("total", n_to_download).
Progress = Callable[[str, int], None]


@contextlib.contextmanager
def archive_lock(index_file: Path) -> Iterator[None]:
    """Exclusive, non-blocking; released when the process dies (flock). Raise RunBusy."""
    index_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{index_file}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"another backup run is using {index_file.parent}") from None
        yield
    finally:
        os.close(fd)


@dataclass
class Job:
    """Everything one run needs; build it, then call :meth:`run` (or :meth:`run_items`)."""

    client: ArchiveClient
    index: ArchiveIndex
    root: Path
    clock: Clock
    downloader_for: Callable[[str], Downloader]
    workers: int = 4
    page_size: int = 2000
    tar: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _emit(self, what: str, n: int) -> None:
        if self.progress is not None:
            self.progress(what, n)

    def run(self, username: str | None, kind: str = "backup") -> RunResult:
        """A whole backup of ``username``'s archive (None: the token's owner)."""
        return self._guarded(kind, lambda r: self._backup(r, username))

    def run_items(
        self,
        username: str | None,
        metas: Callable[[], list[dict[str, Any]]],
        accept: Callable[[ImageMeta], bool] = lambda m: True,
        kind: str = "download",
    ) -> RunResult:
        """Download the images ``metas()`` returns (one-shot: by id, sequence, bbox)."""
        return self._guarded(kind, lambda r: self._items(r, username, metas, accept))

    # --- the run ---------------------------------------------------------------------------

    def _guarded(self, kind: str, body: Callable[[RunResult], None]) -> RunResult:
        result = RunResult()
        run_id = self.index.start_run(kind, self._now())
        swept = sweep_partials(self.root)
        if swept:
            log.info("archive_partials_removed", count=swept)
        try:
            body(result)
            if result.result == "running":
                result.result = "partial" if result.failed else "ok"
                if result.failed:
                    result.reason = f"{result.failed} image(s) failed; the next run tries again"
        except errors.AuthError as exc:
            result.result = "failed"
            result.reason = f"token rejected: {exc}"
        except DiskFullError as exc:
            result.result = "failed"
            result.reason = exc.strerror or str(exc)
        except OSError as exc:
            result.result = "failed"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                result.reason = f"disk full: {exc.strerror} ({exc.filename or self.root})"
            else:
                result.reason = f"archive folder: {exc}"
        except (errors.UploadError, GraphError) as exc:
            result.result = "failed"
            result.reason = f"Mapillary API: {exc}"
        except BaseException as exc:
            self.index.finish_run(run_id, self._now(), "failed", f"crashed: {exc!r}")
            raise
        result.requests = self.client.requests
        self.index.finish_run(
            run_id,
            self._now(),
            result.result,
            result.reason,
            listed=result.listed,
            downloaded=result.downloaded,
            skipped=result.skipped,
            failed=result.failed,
            bytes=result.bytes,
            deleted_on_server=result.deleted_on_server,
        )
        log.info(
            "archive_run_finished",
            kind=kind,
            **{k: v for k, v in result.as_json().items() if k != "failed_ids"},
        )
        return result

    def _backup(self, result: RunResult, username: str | None) -> None:
        user = username or self.client.me()
        result.username = user
        self.root.mkdir(parents=True, exist_ok=True)
        p = self.index.open_pass(user, self._now())
        result.pages, result.listed = p.pages, p.listed
        # A pass with pages and no next cursor was listed whole by a run killed before it
        # closed the pass: nothing more to list.
        listed_whole = bool(p.pages) and p.next_url is None
        while not listed_whole and not self.stop.is_set():
            raw, nxt = self.client.list_page(p.next_url, user, [*LIST_FIELDS], self.page_size)
            metas = []
            for r in raw:
                with contextlib.suppress(ValueError):
                    metas.append(parse_image(r))
            p = self.index.record_page(p, metas, nxt)
            result.pages, result.listed = p.pages, p.listed
            self._emit("listed", p.listed)
            listed_whole = nxt is None
        if self.stop.is_set():
            result.result, result.reason = "failed", "stopped before the listing finished"
            return
        result.deleted_on_server = self.index.complete_pass(p, self._now())
        self._download(result, user, self.index.pending(user))

    def _items(
        self,
        result: RunResult,
        username: str | None,
        metas: Callable[[], list[dict[str, Any]]],
        accept: Callable[[ImageMeta], bool],
    ) -> None:
        parsed = []
        for r in metas():
            with contextlib.suppress(ValueError):
                m = parse_image(r)
                if accept(m):
                    parsed.append(m)
        user = username or next((m.creator_username for m in parsed if m.creator_username), None)
        user = user or self.client.me()
        result.username = user
        result.listed = len(parsed)
        self.index.add_known(parsed, user)
        todo = [m.raw for m in parsed if self.index.archived_path(m.id) is None]
        result.skipped = len(parsed) - len(todo)
        self._download(result, user, todo)

    def _download(self, result: RunResult, user: str, todo: list[dict[str, Any]]) -> None:
        downloader = self.downloader_for(user)
        metas = []
        for raw in todo:
            with contextlib.suppress(ValueError):
                metas.append(parse_image(raw))
        self._emit("total", len(metas))
        touched: dict[PurePosixPath, None] = {}
        fatal: list[BaseException] = []
        abort = threading.Event()

        def one(meta: ImageMeta) -> Saved | None:
            if abort.is_set() or self.stop.is_set():
                return None
            return downloader.archive(meta)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="archive") as pool:
            pending: dict[Future[Saved | None], ImageMeta] = {}
            pos = prefetched = 0

            def submit_more() -> None:
                nonlocal pos, prefetched
                while pos < len(metas) and len(pending) < self.workers * 2:
                    if abort.is_set() or self.stop.is_set():
                        return
                    if pos >= prefetched:  # fresh URLs for the next batch, just before use
                        batch = metas[pos : pos + URL_BATCH]
                        try:
                            downloader.prefetch(batch)
                        except errors.AuthError as exc:
                            fatal.append(exc)
                            abort.set()
                            return
                        prefetched = pos + len(batch)
                    pending[pool.submit(one, metas[pos])] = metas[pos]
                    pos += 1

            submit_more()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    meta = pending.pop(fut)
                    try:
                        saved = fut.result()
                    except ItemFailed as exc:
                        result.failed += 1
                        result.failed_ids.append(meta.id)
                        self.index.mark_failed(meta.id, str(exc))
                        log.warning("archive_image_failed", image=meta.id, error=str(exc))
                        continue
                    except (errors.AuthError, OSError) as exc:  # token, disk full, folder
                        fatal.append(exc)
                        abort.set()
                        continue
                    except (errors.UploadError, GraphError) as exc:
                        result.failed += 1
                        result.failed_ids.append(meta.id)
                        self.index.mark_failed(meta.id, str(exc))
                        log.warning("archive_image_failed", image=meta.id, error=str(exc))
                        continue
                    if saved is None:
                        continue
                    self.index.mark_archived(meta.id, saved.path, saved.size, self._now())
                    result.downloaded += 1
                    result.bytes += saved.size
                    touched[sequence_dir(user, meta)] = None
                    self._emit("image", saved.size)
                submit_more()
        if fatal:
            raise fatal[0]
        self._finish_sequences(user, touched)
        if self.stop.is_set():
            result.result, result.reason = "failed", "stopped before every image was archived"

    def _finish_sequences(self, user: str, touched: dict[PurePosixPath, None]) -> None:
        """Write the sidecar of each sequence folder written to, in this run or in a killed one
        (the index's ``unfinished``), then tar the complete ones. With ``tar``, also every folder
        whose images are not noted as packed: a run killed while packing, or archives made
        before ``tar`` was set."""
        dirs = dict(touched)
        dirs.update((PurePosixPath(d), None) for d in self.index.unfinished(user))
        if self.tar:
            dirs.update((PurePosixPath(d), None) for d in self.index.unpacked(user))
        by_seq: dict[str | None, list[tuple[str, dict[str, Any]]]] = {}
        for seq_dir in sorted(dirs):
            seq = None if seq_dir.name == "no-sequence" else seq_dir.name
            if seq not in by_seq:
                by_seq[seq] = [
                    (path, json.loads(meta))
                    for _id, path, meta in self.index.sequence_rows(user, seq)
                ]
            rows = [r for r in by_seq[seq] if PurePosixPath(r[0]).parent == seq_dir]
            self._finish_one(user, seq_dir, seq, rows)
            self.index.mark_finished(user, str(seq_dir))

    def _finish_one(
        self,
        user: str,
        seq_dir: PurePosixPath,
        seq: str | None,
        rows: list[tuple[str, dict[str, Any]]],
    ) -> None:
        folder = self.root / seq_dir
        tar_file = self.root / tar_path(seq_dir)
        packable = self.tar and seq is not None
        ids = [PurePosixPath(r[0]).stem for r in rows]
        if packable and tar_file.exists() and not tarball.has_files(folder):
            # Packed by a run killed before it noted so (or nothing new since): the folder is
            # gone, its sidecar is in the tar.
            self.index.mark_packed(ids, str(tar_path(seq_dir)))
            return
        write_atomic(self.root / sidecar_path(seq_dir), sidecar.render(rows))
        if packable and seq is not None and not self._has_pending(user, seq):
            tarball.pack(folder, tar_file)
            self.index.mark_packed(ids, str(tar_path(seq_dir)))

    def _has_pending(self, user: str, seq: str) -> bool:
        return any(m.get("sequence") == seq for m in self.index.pending(user))
