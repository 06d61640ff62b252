"""The sandbox's fault spec and fault decisions, without a server."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.sandbox.body import BodyCut
from daemon.sandbox.faults import (
    FaultSpec,
    FaultSpecError,
    Outage,
    Rule,
    Throttle,
    cut_body,
    draw,
    load_spec,
    parse_spec,
)

UPLOAD = "POST /upload/{session_key}"
OFFSET = "GET /upload/{session_key}"

STORM_TOML = """
seed = 7
bandwidth = 1000000

[[rules]]
routes = ["POST /upload/*", "GET /upload/*"]
server_error = 0.2
rate_limit = 0.05
retry_after = 2
retry_after_forms = ["date"]
cut = 0.05
lost_response = 0.02
offset_regress = 0.3

[[rules]]
routes = ["POST /finish_upload"]
server_error = 0.5

[outage]
start = 10
duration = 5
status = 0
"""


def test_toml_and_json_give_the_same_spec() -> None:
    spec = parse_spec(STORM_TOML, "storm.toml")
    again = parse_spec(json.dumps(spec.as_json()), "storm.json")

    assert spec == again
    assert spec.seed == 7 and spec.bandwidth == 1_000_000
    assert spec.outage == Outage(start=10, duration=5, status=0)
    assert spec.rules[0].retry_after_forms == ("date",)
    assert spec.rule_for(UPLOAD) is spec.rules[0]
    assert spec.rule_for("POST /finish_upload") is spec.rules[1]
    assert spec.rule_for("GET /me") is None


def test_load_spec_reads_a_file_or_the_text(tmp_path: Path) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(STORM_TOML, encoding="utf-8")

    assert load_spec(str(path)) == parse_spec(STORM_TOML, "x")
    assert load_spec('{"seed": 3}') == FaultSpec(seed=3)


def test_every_problem_is_reported_with_its_key_path() -> None:
    bad = {
        "seed": "x",
        "colour": 1,
        "rules": [
            {"server_error": 1.5, "cut": -1, "retry_after_forms": ["never"], "routes": 3},
            {"server_error": 0.6, "rate_limit": 0.6, "auth_status": 404},
        ],
        "outage": {"status": 200},
    }
    with pytest.raises(FaultSpecError) as caught:
        parse_spec(json.dumps(bad), "spec.json")

    problems = caught.value.problems
    assert isinstance(caught.value, ConfigError)  # the CLI exits 2 with the message
    for expected in (
        "seed: must be an integer",
        "colour: unknown key",
        "rules[0].server_error: must be between 0 and 1",
        "rules[0].cut: must be between 0 and 1",
        "rules[0].retry_after_forms: must be a list of seconds, date, backoff",
        "rules[0].routes: must be a list of route patterns",
        "rules[1].server_error + rate_limit + auth + cut + lost_response: must add up to at most 1",
        "rules[1].auth_status: must be one of 401, 403",
        "outage.status: must be a 5xx status, or 0 to drop connections",
    ):
        assert any(p.startswith(expected) for p in problems), (expected, problems)
    assert str(caught.value).startswith("spec.json: ")


def test_unparsable_text_names_its_source() -> None:
    with pytest.raises(FaultSpecError, match=r"(?s)^--faults: .*not valid JSON or TOML"):
        load_spec("seed = = 3")


def test_draw_is_deterministic_and_independent_of_other_keys() -> None:
    rule = Rule(server_error=0.3, cut=0.1, lost_response=0.1, slow=0.2, offset_regress=0.5)
    a = [draw(5, UPLOAD, "k1", n, rule, True) for n in range(50)]

    assert a == [draw(5, UPLOAD, "k1", n, rule, True) for n in range(50)]
    assert a != [draw(6, UPLOAD, "k1", n, rule, True) for n in range(50)]
    assert a != [draw(5, UPLOAD, "k2", n, rule, True) for n in range(50)]


def test_draw_follows_the_rates() -> None:
    rule = Rule(server_error=0.2, rate_limit=0.05, cut=0.05, lost_response=0.02, slow=0.1)
    n = 20_000
    fates = [draw(1, UPLOAD, f"k{i % 97}", i, rule, True) for i in range(n)]
    kinds = Counter(f.kind for f in fates)

    for kind, rate in [("server_error", 0.2), ("rate_limit", 0.05), ("cut", 0.05)]:
        assert abs(kinds[kind] / n - rate) < 0.01, (kind, kinds)
    assert abs(kinds["lost_response"] / n - 0.02) < 0.005
    assert abs(sum(f.slow for f in fates) / n - 0.1) < 0.01
    assert kinds[None] / n == pytest.approx(0.68, abs=0.015)


def test_no_cut_without_a_body() -> None:
    rule = Rule(cut=1.0)
    assert {draw(1, OFFSET, "k", i, rule, False).kind for i in range(200)} == {None}
    assert {draw(1, UPLOAD, "k", i, rule, True).kind for i in range(200)} == {"cut"}


def test_retry_after_forms_take_turns_per_key() -> None:
    rule = Rule(rate_limit=1.0)
    forms = [draw(1, UPLOAD, "k", i, rule, True).form for i in range(6)]
    assert forms == ["seconds", "date", "backoff"] * 2


def _collect(pieces: list[bytes], at: int | None, fraction: float) -> tuple[bytes, bool]:
    out = bytearray()
    try:
        for piece in cut_body(iter(pieces), at, fraction):
            out += piece
    except BodyCut:
        return bytes(out), True
    return bytes(out), False


@pytest.mark.parametrize(
    ("at", "fraction", "expected"),
    [
        (0, 0.5, b""),
        (5, 0.5, b"abcde"),
        (10, 0.5, b"abcdefghij"),  # at a piece boundary
        (12, 0.5, b"abcdefghijkl"),
        (100, 0.5, b"abcdefghijklmnopqrst" + b"uvw"),  # beyond the end: inside the last piece
        (None, 0.9, b"abcdefghijklmnopqrst" + b"uvwxyz"[:5]),
        (21, 0.9, b"abcdefghijklmnopqrst" + b"u"),
        (24, 0.1, b"abcdefghijklmnopqrst" + b"uvwx"),  # a known cut point wins
    ],
)
def test_cut_body_always_cuts_before_the_end(
    at: int | None, fraction: float, expected: bytes
) -> None:
    pieces = [b"abcdefghij", b"klmnopqrst", b"uvwxyz"]
    data, cut = _collect(pieces, at, fraction)

    assert cut
    assert data == expected
    assert len(data) < 26


def test_throttle_spaces_bytes_at_the_rate() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # a fake clock: the test must not take seconds
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(1000, sleep=sleep, monotonic=lambda: now[0])
    for _ in range(5):
        throttle.wait(500)
    now[0] += 10  # idle: no credit is saved up for a burst
    throttle.wait(500)

    assert slept == pytest.approx([0.5] * 6)
    Throttle(0, sleep=sleep).wait(10**9)
    assert len(slept) == 6
