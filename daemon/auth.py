"""``mapillaryd auth``: check a user token against Mapillary and keep it in a 0600 file.

Tokens come from the user (a prompt, stdin, or ``--token``) or from mapillary_tools' profile
config: an INI file at ``$MAPILLARY_CONFIG_PATH``, else
``~/.config/mapillary/configs/<client token with | as _>``, one section per profile holding
``user_upload_token`` and, optionally, ``MAPSettingsUsername``, ``MAPSettingsUserKey`` and
``MAPOrganizationKey`` (what ``mapillary_tools authenticate`` writes).

The token file is written atomically (a 0600 temporary beside it, fsync'd, renamed over it), so
a running daemon — which re-reads the file on every upload attempt — never sees half a token,
and held uploads resume without a restart.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from daemon import errors
from daemon.mapillary.graph import GraphClient

#: mapillary_tools' client token; its profile file is named after it.
MT_CLIENT_TOKEN = "MLY|5675152195860640|6b02c72e6e3c801e5603ab0495623282"


class AuthFailed(errors.FatalError):
    """The token was rejected, or none could be found. Exit code 4, as for held uploads."""

    exit_code = 4


@dataclass(frozen=True)
class Profile:
    """One mapillary_tools profile (the token is kept out of ``repr``)."""

    name: str
    token: str
    username: str = ""
    user_key: str = ""
    organization_key: str = ""

    def __repr__(self) -> str:
        return f"Profile(name={self.name!r}, username={self.username!r})"


def mapillary_tools_config_path(env: Mapping[str, str], home: Path) -> Path:
    """Where mapillary_tools keeps its profiles (it honours the same two variables)."""
    if env.get("MAPILLARY_CONFIG_PATH"):
        return Path(env["MAPILLARY_CONFIG_PATH"])
    client = env.get("MAPILLARY_CLIENT_TOKEN") or MT_CLIENT_TOKEN
    return home / ".config" / "mapillary" / "configs" / client.replace("|", "_")


def parse_profiles(text: str, source: str = "<profiles>") -> dict[str, Profile]:
    """The profiles in a mapillary_tools config text; sections without ``user_upload_token`` are
    skipped. Raise :class:`AuthFailed` naming ``source`` if it is not an INI file."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise AuthFailed(f"{source}: not a mapillary_tools profile file: {exc}") from exc
    profiles = {}
    for name in parser.sections():
        items = parser[name]
        token = items.get("user_upload_token", "").strip()
        if token:
            profiles[name] = Profile(
                name,
                token,
                items.get("MAPSettingsUsername", ""),
                items.get("MAPSettingsUserKey", ""),
                items.get("MAPOrganizationKey", ""),
            )
    return profiles


def choose_profile(profiles: Mapping[str, Profile], wanted: str | None, source: str) -> Profile:
    """The profile named ``wanted``, or the only one. Raise :class:`AuthFailed` otherwise."""
    if not profiles:
        raise AuthFailed(f"{source}: no profile with a user_upload_token")
    if wanted is not None:
        if wanted not in profiles:
            raise AuthFailed(f"{source}: no profile {wanted!r} (there are: {', '.join(profiles)})")
        return profiles[wanted]
    if len(profiles) > 1:
        raise AuthFailed(
            f"{source}: several profiles ({', '.join(profiles)}); name one with --profile"
        )
    return next(iter(profiles.values()))


def load_profile(path: Path, wanted: str | None) -> Profile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthFailed(f"{path}: cannot read mapillary_tools' profiles: {exc.strerror}") from exc
    return choose_profile(parse_profiles(text, str(path)), wanted, str(path))


def check_token(graph_endpoint: str, token: str, timeout: float = 20.0) -> dict[str, str]:
    """``{"id", "username"}`` of the token's owner (``GET /me``). Raise :class:`AuthFailed` if
    Mapillary rejects it; :class:`daemon.errors.UploadError` (e.g. ``TransportError``) if it
    could not be asked."""
    with GraphClient(graph_endpoint, token, timeout=timeout) as graph:
        try:
            return graph.me()
        except errors.AuthError as exc:
            raise AuthFailed(f"Mapillary rejected the token: {exc}") from exc


def store_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` with mode 0600, atomically (parent created 0700)."""
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise AuthFailed("that is not a token: empty or with spaces inside")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # in case the umask or an older file widened it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
