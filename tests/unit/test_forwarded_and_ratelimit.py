"""The client address behind proxies, the rate-limit settings and their arithmetic."""

from __future__ import annotations

import logging

import pytest
from limits import parse

from gateway.config import SettingsError, load_settings
from gateway.http.forwarded import (
    Hop,
    TrustedProxies,
    client_view,
    parse_forwarded,
    parse_networks,
    parse_x_forwarded,
)
from gateway.http.ratelimit import Budgets, Check, MemoryWindows, Refused, read_request, retry_after

TRUSTED = TrustedProxies(parse_networks(["10.0.0.0/8", "192.168.1.1", "2001:db8:ffff::/48"]))


def test_trusted_proxies_match_addresses_and_cidrs() -> None:
    assert "10.1.2.3" in TRUSTED and "192.168.1.1" in TRUSTED and "2001:db8:ffff::9" in TRUSTED
    assert "::ffff:10.0.0.1" in TRUSTED  # a dual-stack socket's form of 10.0.0.1
    assert "192.168.1.2" not in TRUSTED and "unknown" not in TRUSTED
    assert not TrustedProxies(())
    with pytest.raises(ValueError, match="not an IP address"):
        parse_networks(["proxy.local"])


def test_rfc7239_forwarded_parsing() -> None:
    """RFC 7239 sections 4 and 6: quoted values, IPv6 in brackets, ports, case-insensitive names."""
    hops = parse_forwarded('for=192.0.2.60;proto=http;by=203.0.113.43, '
                           'For="[2001:db8:cafe::17]:4711";host="live.example.com:8443", '
                           'for="_hidden;x", for=unknown')
    assert hops == [Hop("192.0.2.60", None, "http"), Hop("[2001:db8:cafe::17]:4711", "live.example.com:8443"),
                    Hop("_hidden;x"), Hop("unknown")]


@pytest.mark.parametrize("peer,header,expected", [
    # Not a trusted peer: the header says nothing.
    ("203.0.113.5", "for=192.0.2.1", None),
    # One proxy.
    ("10.0.0.2", "for=192.0.2.1", "192.0.2.1"),
    # A client's own claim comes first, the proxy appends the real one: the rightmost untrusted wins.
    ("10.0.0.2", "for=1.2.3.4, for=192.0.2.1", "192.0.2.1"),
    # Two trusted proxies in a row.
    ("10.0.0.2", "for=192.0.2.1, for=10.0.0.9", "192.0.2.1"),
    # IPv6 with a port; an IPv4-mapped one.
    ("10.0.0.2", 'for="[2001:db8::1]:4711"', "2001:db8::1"),
    ("10.0.0.2", 'for="[::ffff:192.0.2.1]"', "192.0.2.1"),
    # Obfuscated identifiers are stable per client: they key a budget.
    ("10.0.0.2", "for=_abc123", "_abc123"),
    # The proxy does not know: the last trusted hop is the client as far as anyone can tell.
    ("10.0.0.2", "for=unknown", None),
    ("10.0.0.2", "for=unknown, for=10.0.0.9", "10.0.0.9"),
    ("10.0.0.2", "for=not-an-address", None),
])
def test_the_client_is_the_first_untrusted_hop_from_the_right(
        peer: str, header: str, expected: str | None) -> None:
    view = client_view(peer, parse_forwarded(header), TRUSTED)
    assert (view.address if view else None) == expected


def test_host_and_proto_come_from_the_hop_that_names_the_client() -> None:
    hops = parse_forwarded('for=1.2.3.4;host=evil.example, for=192.0.2.1;host=live.example:443;proto=HTTPS')
    view = client_view("10.0.0.2", hops, TRUSTED)
    assert view is not None and (view.host, view.proto) == ("live.example:443", "https")
    # Values that could break a Location header are dropped.
    bad = client_view("10.0.0.2", parse_forwarded('for=192.0.2.1;host="a b/c";proto=javascript'), TRUSTED)
    assert bad is not None and (bad.address, bad.host, bad.proto) == ("192.0.2.1", None, None)


def test_x_forwarded_headers() -> None:
    hops = parse_x_forwarded("1.2.3.4, 192.0.2.1:5555", "live.example, other", "https")
    assert hops == [Hop("1.2.3.4"), Hop("192.0.2.1:5555", "other", "https")]
    view = client_view("192.168.1.1", hops, TRUSTED)
    assert view is not None and (view.address, view.port) == ("192.0.2.1", 5555)


def test_settings_for_proxies_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    assert defaults.trusted_proxies == [] and defaults.forwarded_header == "x-forwarded-for"
    assert defaults.rate_limit_storage == "memory://"
    # The sizing the README explains: a 1000-viewer join from one address fits.
    view = parse(defaults.rate_limit_view_per_client or "")
    publish = parse(defaults.rate_limit_publish_per_client or "")
    everything = parse(defaults.rate_limit_per_client or "")
    per_minute = lambda item: item.amount * 60 / item.get_expiry()  # noqa: E731
    assert per_minute(view) >= 2000 and per_minute(everything) >= 1000 * 5
    assert per_minute(publish) < per_minute(view)
    assert per_minute(parse(defaults.rate_limit_auth_failures_per_client or "")) <= 60

    monkeypatch.setenv("WHIP_GATEWAY_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16")
    assert load_settings().trusted_proxies == ["10.0.0.1/32", "192.168.0.0/16"]
    monkeypatch.setenv("WHIP_GATEWAY_TRUSTED_PROXIES", '["::1"]')
    assert load_settings().trusted_proxies == ["::1/128"]
    monkeypatch.delenv("WHIP_GATEWAY_TRUSTED_PROXIES")
    assert load_settings(rate_limit_per_client="").rate_limit_per_client is None  # "" turns it off
    assert Budgets.from_settings(load_settings(rate_limit_per_client="")).per_client is None


@pytest.mark.parametrize("overrides,needle", [
    ({"trusted_proxies": ["proxy.local"]}, "trusted_proxies"),
    ({"forwarded_header": "x-real-ip"}, "forwarded_header"),
    ({"rate_limit_storage": "mongodb://x"}, "rate_limit_storage"),
    ({"rate_limit_view_per_client": "lots"}, "rate_limit_view_per_client"),
    ({"rate_limit_auth_failures_per_client": "5/fortnight"}, "rate_limit_auth_failures_per_client"),
])
def test_bad_limit_settings_name_the_setting(overrides: dict, needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(**overrides)
    assert needle in str(err.value)


def test_uvicorns_forwarded_allow_ips_is_mapped_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Before, uvicorn read FORWARDED_ALLOW_IPS; a deployment that set it keeps its proxies."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.5,10.1.0.0/16")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert load_settings().trusted_proxies == ["10.0.0.5/32", "10.1.0.0/16"]
    assert "WHIP_GATEWAY_TRUSTED_PROXIES" in caplog.text
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    assert load_settings().trusted_proxies == ["0.0.0.0/0", "::/0"]
    # The gateway's own setting wins.
    assert load_settings(trusted_proxies=["10.0.0.7"]).trusted_proxies == ["10.0.0.7/32"]


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None,
           query: bytes = b"") -> dict:
    return {"type": "http", "method": method, "path": path, "headers": headers or [],
            "query_string": query, "client": ("192.0.2.1", 5000)}


def test_which_requests_count_and_how() -> None:
    post = read_request(_scope("POST", "/whep/live"))
    assert post is not None and post.creates_session and post.counted and not post.has_token
    patch = read_request(_scope("PATCH", "/whip/live/abc", [(b"authorization", b"Bearer x")]))
    assert patch is not None and patch.session == "abc" and patch.has_token and not patch.creates_session
    sse = read_request(_scope("POST", "/whep/live/abc/sse", query=b"token=t"))
    assert sse is not None and sse.session == "abc" and sse.has_token and not sse.creates_session
    get = read_request(_scope("GET", "/whep/live/abc/sse/1"))
    assert get is not None and not get.counted
    assert read_request(_scope("GET", "/api/streams")) is None
    weird = read_request(_scope("POST", "/whep/" + "x" * 300))
    assert weird is not None and weird.stream == "-"  # no key per invalid name
    # A raw UTF-8 query (found by test_fuzz.py::test_headers) was a 500 here.
    raw = read_request(_scope("POST", "/whep/live", query="token=\u00e9t\u00e9&x=\u2603".encode()))
    assert raw is not None and raw.has_token


def test_retry_after_says_when_a_sliding_window_admits_again() -> None:
    item = parse("10/minute")
    # Spent within the current window, nothing before it: just past the roll-over
    # (where the old count, at full weight, starts to decay).
    assert retry_after(item, 0, 0.0, 10, 60 + 20.0) == 21
    # Well over: after the roll-over the old count must decay below the limit: 20 * 30/60.
    assert retry_after(item, 0, 0.0, 20, 60 + 20.0) == 20 + 30 + 1
    # The previous window weighs in: 10 * 42/60 + 5 = 12, under 10 once 10 * (42-t)/60 < 5.
    assert retry_after(item, 10, 42.0, 5, 60 + 50.0) == 13
    assert retry_after(item, 1, 0.01, 0, 60 + 50.0) == 1  # never 0


async def test_memory_windows_slide_and_forget() -> None:
    """The in-process counters: the limit, the roll-over's weighting, all-or-nothing, the sweep."""
    now = [600.0]  # the start of a one-minute window
    windows = MemoryWindows(clock=lambda: now[0])
    item, other = parse("10/minute"), parse("100/minute")
    hit_a = [Check(item, "a", "hit")]
    assert [await windows.apply(hit_a) for _ in range(10)] == [None] * 10
    refused = await windows.apply([Check(other, "b", "hit"), *hit_a])
    assert refused == Refused(1, (0, 0.0, 10, 120.0))
    assert await windows.apply([Check(other, "b", "test")]) is None  # "b" was not counted
    now[0] += 60 + 15  # the next window, a quarter in: the old 10 weigh 7.5
    assert [await windows.apply(hit_a) is None for _ in range(4)] == [True, True, True, False]
    refused = await windows.apply(hit_a)
    assert refused is not None and retry_after(item, *refused.window) == 4  # 10*(45-t)/60 + 3 < 10
    now[0] += 120  # two windows later, and past a sweep: nothing is left
    await windows.apply([Check(item, "z", "test")])
    assert len(windows) == 1
    assert await windows.apply(hit_a) is None
