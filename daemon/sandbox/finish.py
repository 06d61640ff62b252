"""``finish_upload``: turn a verified, complete upload session into a cluster.

Idempotent by handle: finishing a handle again returns the cluster recorded the first time and
creates nothing. For ``mly_bundle_manifest`` the session's bytes must be the manifest JSON
``{"image_handles": [...], "upload_type": "images", "version": "1"}``; every image handle must be
one of ours, unexpired and complete, and every image must carry a JSON ``ImageDescription``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import piexif

from daemon.clock import Clock
from daemon.sandbox.handles import HandleError, HandleSigner
from daemon.sandbox.store import Cluster, ClusterDraft, ImageRecord, SandboxStore, Session

FILE_TYPES = frozenset({"mly_bundle_manifest", "mly_camm_video", "zip", "mly_blackvue_video"})
BUNDLE = "mly_bundle_manifest"
#: Where a photo's EXIF is looked for first: an APP1 segment holds at most 64 KiB, and comes
#: after SOI and perhaps a JFIF segment.
HEAD_BYTES = 256 * 1024


class FinishError(Exception):
    """The request cannot be finished; answered as a Graph API error with HTTP 400."""


@dataclass(frozen=True)
class FinishRequest:
    """A parsed ``finish_upload`` body."""

    handle: str
    file_type: str
    organization_id: str | None


def parse_request(raw: bytes) -> FinishRequest:
    """Validate the JSON body of ``POST /finish_upload``."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FinishError(f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise FinishError("request body must be a JSON object")
    handle, file_type = body.get("file_handle"), body.get("file_type")
    if not isinstance(handle, str) or not handle:
        raise FinishError("file_handle is required")
    if file_type not in FILE_TYPES:
        raise FinishError(f"file_type must be one of {sorted(FILE_TYPES)}")
    org = body.get("organization_id")
    if org is not None and not isinstance(org, str | int):
        raise FinishError("organization_id must be a string or an integer")
    return FinishRequest(handle, file_type, None if org is None else str(org))


class Finisher:
    """Verifies handles and records clusters in a store."""

    def __init__(self, store: SandboxStore, signer: HandleSigner, clock: Clock) -> None:
        self._store = store
        self._signer = signer
        self._clock = clock

    def finish(self, request: FinishRequest) -> Cluster:
        """The cluster for ``request``: the existing one if its handle was finished before."""
        existing = self._store.cluster_by_handle(request.handle)
        if existing is not None:
            if existing.draft.file_type != request.file_type:
                raise FinishError(
                    f"handle already finished as {existing.draft.file_type},"
                    f" not {request.file_type}"
                )
            return existing
        session = self._complete_session(request.handle, "file_handle")
        images = self._bundle_images(session) if request.file_type == BUNDLE else []
        draft = ClusterDraft(
            handle=request.handle,
            session_key=session.key,
            file_type=request.file_type,
            organization_id=request.organization_id,
            size=session.size,
            images=images,
        )
        return self._store.add_cluster(draft)

    def _complete_session(self, handle: str, what: str) -> Session:
        try:
            parsed = self._signer.parse(handle)
        except HandleError as exc:
            raise FinishError(f"{what} is invalid: {exc}") from exc
        if parsed.expires_at < self._clock.now().timestamp():
            raise FinishError(f"{what} expired")
        session = self._store.session(parsed.session_key)
        if session is None or not session.complete:
            raise FinishError(f"{what} refers to an upload that is not complete")
        return session

    def _bundle_images(self, manifest_session: Session) -> list[ImageRecord]:
        handles = _manifest_handles(self._store.read(manifest_session.key))
        return [self._image(i, h) for i, h in enumerate(handles)]

    def _image(self, index: int, handle: str) -> ImageRecord:
        session = self._complete_session(handle, f"image_handles[{index}]")
        try:  # the EXIF is in the header: read the whole photo only if it is not there
            description = _image_description(self._store.read_head(session.key, HEAD_BYTES), index)
        except FinishError:
            description = _image_description(self._store.read(session.key), index)
        return ImageRecord(
            handle=handle,
            session_key=session.key,
            md5=None,
            size=session.size,
            description=description,
        )


def _manifest_handles(raw: bytes) -> list[str]:
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FinishError(f"manifest is not JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise FinishError("manifest must be a JSON object")
    handles = manifest.get("image_handles")
    if not isinstance(handles, list) or not handles:
        raise FinishError("manifest has no image_handles")
    if not all(isinstance(h, str) for h in handles):
        raise FinishError("manifest image_handles must be strings")
    if manifest.get("upload_type") != "images" or manifest.get("version") != "1":
        raise FinishError('manifest needs "upload_type": "images" and "version": "1"')
    return list(handles)


def _image_description(data: bytes, index: int) -> dict[str, Any]:
    try:
        raw = piexif.load(data)["0th"].get(piexif.ImageIFD.ImageDescription)
    except Exception as exc:  # piexif raises a zoo of errors on untrusted bytes
        raise FinishError(f"image_handles[{index}]: EXIF unreadable: {exc}") from exc
    if raw is None:
        raise FinishError(f"image_handles[{index}]: no EXIF ImageDescription")
    try:
        description = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FinishError(f"image_handles[{index}]: ImageDescription is not JSON") from exc
    if not isinstance(description, dict):
        raise FinishError(f"image_handles[{index}]: ImageDescription is not a JSON object")
    return description
