"""What a contender's sandbox must hold afterwards: every frame, exactly once.

Correctness, not timing: a contender that is fast because it uploaded nothing (or twice as fast
because it uploaded half) must not produce a figure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any


class VerificationError(Exception):
    """A contender's sandbox does not hold exactly the drive's frames."""


def check_clusters(who: str, clusters: list[dict[str, Any]], expected_names: Iterable[str]) -> int:
    """Raise :class:`VerificationError` unless ``clusters`` hold each expected frame exactly once.

    Checked: one or more image bundles and nothing else; as many image records as frames; as
    many distinct uploaded contents (MD5) as frames; and ``MAPFilename`` covering exactly the
    expected names, each once. Returns the number of bundles.
    """
    expected = set(expected_names)
    if not clusters:
        raise VerificationError(f"{who}: the sandbox holds no cluster at all")
    other = sorted({c.get("file_type") for c in clusters} - {"mly_bundle_manifest"}, key=str)
    if other:
        raise VerificationError(f"{who}: unexpected cluster types {other}")
    images = [image for c in clusters for image in c.get("images", [])]
    problems = []
    if len(images) != len(expected):
        problems.append(f"{len(images)} image records for {len(expected)} frames")
    distinct = len({image["md5"] for image in images})
    if distinct != len(expected):
        problems.append(f"{distinct} distinct images (by MD5) for {len(expected)} frames")
    names = Counter(str(image["description"].get("MAPFilename")) for image in images)
    doubled = sorted(n for n, k in names.items() if k > 1)
    missing = sorted(expected - set(names))
    unknown = sorted(set(names) - expected)
    for label, found in (("twice or more", doubled), ("missing", missing), ("unknown", unknown)):
        if found:
            problems.append(f"{len(found)} frame(s) {label}, e.g. {', '.join(found[:3])}")
    if problems:
        raise VerificationError(f"{who}: the sandbox is wrong: " + "; ".join(problems))
    return len(clusters)
