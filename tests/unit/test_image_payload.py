"""What an image upload sends and under which session key (daemon/upload.py prepare_image)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import piexif
import pytest

from daemon import synth
from daemon.errors import ItemError
from daemon.media.exif import description_splice, with_description
from daemon.store.queue import Item
from daemon.upload import image_session_key, prepare_image


def item_for(frame: synth.Frame, **changes: object) -> Item:
    data = frame.path.read_bytes()
    item = Item(
        id=1,
        sha256=hashlib.sha256(data).hexdigest(),
        kind="image",
        size=len(data),
        source_path=str(frame.path),
        data_path=str(frame.path),
        watch=str(frame.path.parent),
        batch_id=1,
        state="uploading",
        reason=None,
        detail=None,
        capture_time=frame.time.isoformat(),
        lat=frame.lat,
        lon=frame.lon,
        alt=frame.alt,
        heading=frame.heading,
        make="Synth",
        model="Cam",
        width=64,
        height=48,
        orientation=1,
        sequence_id="seq-1",
        seq_index=0,
        session_key=None,
        handle=None,
        attempts=0,
    )
    return dataclasses.replace(item, **changes)  # type: ignore[arg-type]


@pytest.fixture
def frames(tmp_path: Path) -> list[synth.Frame]:
    return synth.write_drive(tmp_path / "card", 3, seed=8)


def test_the_payload_is_the_photo_with_its_description_and_a_stable_key(
    frames: list[synth.Frame],
) -> None:
    first = prepare_image(item_for(frames[0]))
    again = prepare_image(item_for(frames[0]))

    assert (bytes(first.data), first.key) == (bytes(again.data), again.key)
    assert re.fullmatch(r"mly_tools_[0-9a-f]{32}\.jpg", first.key)
    raw = piexif.load(bytes(first.data))["0th"][piexif.ImageIFD.ImageDescription]
    description = json.loads(raw)
    assert (description["MAPLatitude"], description["MAPLongitude"]) == pytest.approx(
        (frames[0].lat, frames[0].lon)
    )


def test_other_bytes_get_another_key(frames: list[synth.Frame]) -> None:
    keys = {prepare_image(item_for(f)).key for f in frames}
    moved = prepare_image(item_for(frames[0], heading=(frames[0].heading + 90) % 360))
    other_sequence = prepare_image(item_for(frames[0], sequence_id="seq-2"))

    assert len(keys) == 3
    unmoved = prepare_image(item_for(frames[0]))
    assert moved.key not in keys and bytes(moved.data) != bytes(unmoved.data)
    # The sequence id is not in the uploaded bytes (as in mapillary_tools): same bytes, same key.
    assert (bytes(other_sequence.data), other_sequence.key) == (bytes(unmoved.data), unmoved.key)


def test_the_key_names_the_splice_not_the_code_that_made_it(frames: list[synth.Frame]) -> None:
    data = frames[0].path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    splice = description_splice(data, {"MAPFilename": "a.jpg"}, "a.jpg")

    assert splice.apply(data) == with_description(data, {"MAPFilename": "a.jpg"}, "a.jpg")
    shifted = dataclasses.replace(splice, end=splice.end + 1)
    assert image_session_key(sha, shifted) != image_session_key(sha, splice)
    assert image_session_key("0" * 64, splice) != image_session_key(sha, splice)


def test_a_copy_that_changed_since_it_was_queued_is_refused(frames: list[synth.Frame]) -> None:
    item = item_for(frames[0])
    frames[0].path.write_bytes(frames[1].path.read_bytes())

    with pytest.raises(ItemError) as caught:
        prepare_image(item)
    assert caught.value.reason == "source_changed"
