"""Client of the Graph API endpoints the uploader needs: ``/me`` and ``/finish_upload``.

Failures are raised as :mod:`daemon.errors` (see :mod:`daemon.mapillary.http`). Unlike
mapillary_tools, callers are expected to retry :meth:`GraphClient.finish_upload`: the service
answers a repeated finish of the same handle with the same cluster.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.mapillary.http import HttpClient, JsonHttp

FILE_TYPES = frozenset({"mly_bundle_manifest", "mly_camm_video", "zip", "mly_blackvue_video"})


class GraphClient(HttpClient):
    """Graph API calls with one user token."""

    def __init__(
        self,
        endpoint: str,
        token: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        gate: Callable[[], None] | None = None,
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._http = JsonHttp(token, clock=clock, timeout=timeout, transport=transport, gate=gate)

    def me(self) -> dict[str, str]:
        """``{"id", "username"}`` of the token's owner (``GET /me?fields=id,username``)."""
        reply = self._http.call("GET", f"{self._endpoint}/me", params={"fields": "id,username"})
        user_id, username = _scalar(reply.payload.get("id")), reply.payload.get("username")
        if user_id is None or not isinstance(username, str):
            raise self._http.protocol_error(reply, "no id and username")
        return {"id": user_id, "username": username}

    def finish_upload(self, handle: str, file_type: str, organization_id: str | None = None) -> str:
        """Turn an uploaded session into a cluster; returns the cluster id.

        ``file_type`` is one of :data:`FILE_TYPES` (ValueError otherwise): ``mly_bundle_manifest``
        for an image manifest's handle, ``mly_camm_video`` for a video, ``zip`` for a zip.
        """
        if file_type not in FILE_TYPES:
            raise ValueError(f"unknown file_type {file_type!r}")
        body: dict[str, str] = {"file_handle": handle, "file_type": file_type}
        if organization_id is not None:
            body["organization_id"] = organization_id
        data = json.dumps(body, separators=(",", ":")).encode()
        reply = self._http.send(
            "POST",
            f"{self._endpoint}/finish_upload",
            {"Content-Type": "application/json"},
            body=(data,),
            length=len(data),
        )
        cluster_id = _scalar(reply.payload.get("cluster_id"))
        if cluster_id is None:
            raise self._http.protocol_error(reply, "no cluster_id")
        return cluster_id


def _scalar(value: Any) -> str | None:
    """An id as a non-empty string: the API sends ids as strings, older answers as integers."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text or None
