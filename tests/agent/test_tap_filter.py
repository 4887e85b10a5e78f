"""The tap's filter, as the admin API and a peer's poll read it, and the tap sink's bounds."""

from __future__ import annotations

import pytest

from gossipmesh.agent.tap import filter_fields, parse_filter
from gossipmesh.proxy.record_sinks import Tap, TapFilter
from gossipmesh.proxy.request_log import Probe, RequestRecord


def probe(service: str = "api", method: bytes = b"GET", path: bytes = b"/a/b", status: int = 200,
          now_ns: int = 0) -> Probe:  # fmt: skip
    p = Probe()
    p.service, p.method, p.url, p.status, p.now_ns = service, method, path, status, now_ns
    return p


def test_filters_match_service_method_path_prefix_and_status_or_class() -> None:
    f = parse_filter({"service": "api", "method": "get", "path": "/a", "status": "5xx"})
    assert f.method == b"GET" and filter_fields(f)["status"] == "5xx"
    assert f.matches(probe(status=503)) and f.matches(probe(status=500, path=b"/a"))
    assert not f.matches(probe(status=200))
    assert not f.matches(probe(status=503, path=b"/b"))
    assert not f.matches(probe(status=503, method=b"POST"))
    assert not f.matches(probe(status=503, service="web"))
    exact = parse_filter({"status": "404"})
    assert exact.matches(probe(status=404)) and not exact.matches(probe(status=403))
    assert parse_filter({}).matches(probe(service="anything"))
    assert parse_filter(filter_fields(f)).matches(probe(status=503))  # a peer reads it back


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"status": "50"}, "status"),
        ({"status": "6xx"}, "status"),
        ({"path": "a"}, "path"),
        ({"method": "G T"}, "method"),
        ({"max_rps": "0"}, "max_rps"),
        ({"max_rps": "lots"}, "max_rps"),
        ({"service": "x" * 300}, "service"),
        ({"service": 5}, "service"),
    ],
)
def test_bad_filters_are_refused_naming_the_field(fields: dict[str, object], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        parse_filter(fields)


def test_a_tap_caps_its_rate_and_drops_for_a_slow_reader() -> None:
    tap = Tap(TapFilter(max_rps=3), buffer=2)
    wanted = [tap.wants(probe(now_ns=0)) for _ in range(5)]
    assert wanted == [True, True, True, False, False] and tap.skipped == 2
    for _ in range(3):
        tap.take(RequestRecord())
    assert tap.dropped == 1  # the channel held two; nobody read them
    assert tap.wants(probe(now_ns=1_000_000_000))  # a second later: tokens again
