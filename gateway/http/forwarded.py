"""Who the client really is when the gateway sits behind reverse proxies.

Behind a proxy every request comes from the proxy's address, so per-client
rate limits would lump all viewers together and the logs would name the
proxy.  The proxy says who its client was in ``Forwarded`` (RFC 7239) or
``X-Forwarded-For``; but anyone can send those headers, so they are read
only when the peer is one of ``trusted_proxies``, and the chain in them is
followed right to left only while each hop is trusted too (RFC 7239
section 7.4: the rightmost entries are the ones the trusted proxies wrote).

What the trusted hop says replaces the ASGI scope's ``client`` (rate limits
and uvicorn's access log read it there), and its ``host`` and ``proto`` the
``Host`` header and scheme (so ``Location`` names the address the client
used, where ``public_url`` is unset).  uvicorn's own ``proxy_headers`` is
off (``gateway.app.SERVER_OPTIONS``): it would trust 127.0.0.1 whatever the
settings say.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Iterable, Literal

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ForwardedHeader = Literal["x-forwarded-for", "forwarded"]

# RFC 7239 section 6.3: an obfuscated node name, stable per client, so it can key a budget.
_OBFUSCATED = re.compile(r"^_[A-Za-z0-9._-]{1,64}$")
# What may go into a Host header we write back (and from there into Location).
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$")
_WARNED_PEERS_MAX = 16


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses or CIDRs; a bare address is a /32 (or /128).  ValueError names a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # "::ffff:10.0.0.1" is 10.0.0.1 (dual-stack sockets)
    return ip


class TrustedProxies:
    """The peers whose forwarding headers are believed."""

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: str) -> bool:
        ip = _address(address)
        return ip is not None and any(ip in net for net in self.networks)


@dataclass(frozen=True)
class Hop:
    """One proxy's word about the request it received: from whom, for which host, how."""

    node: str | None  # for= / an X-Forwarded-For entry, as sent
    host: str | None = None
    proto: str | None = None


@dataclass(frozen=True)
class ClientView:
    """The request as the client made it, according to the trusted proxies."""

    address: str
    port: int
    host: str | None
    proto: str | None


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quoted strings (RFC 7230 section 3.2.6 quoting)."""
    parts, current, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_forwarded(value: str) -> list[Hop]:
    """RFC 7239 section 4: ``for=...;host=...;proto=...`` elements, comma-separated."""
    hops = []
    for element in _split_top(value, ","):
        params: dict[str, str] = {}
        for pair in _split_top(element, ";"):
            name, sep, raw = pair.partition("=")
            if sep:
                params[name.strip().lower()] = _unquote(raw)
        hops.append(Hop(params.get("for"), params.get("host"), params.get("proto")))
    return hops


def parse_x_forwarded(xff: str, host: str | None, proto: str | None) -> list[Hop]:
    """``X-Forwarded-For`` entries; ``X-Forwarded-Host``/``-Proto`` go with the last one.

    Proxies append to X-Forwarded-For but usually overwrite the other two,
    so their rightmost value is the one the nearest proxy wrote.
    """
    def last(value: str | None) -> str | None:
        return value.split(",")[-1].strip() if value else None

    hops = [Hop(entry.strip()) for entry in xff.split(",")]
    if hops:
        hops[-1] = Hop(hops[-1].node, last(host), last(proto))
    return hops


def _node(node: str | None) -> tuple[str, int] | None:
    """``for=`` / X-Forwarded-For value → (address, port), None if it names no client.

    RFC 7239 section 6: ``192.0.2.43``, ``"192.0.2.43:47011"``,
    ``"[2001:db8::17]:4711"``, an obfuscated ``_name``, or ``unknown``.
    """
    if not node:
        return None
    text, port = node.strip(), 0
    if text.startswith("["):
        inside, _, rest = text[1:].partition("]")
        text = inside
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif text.count(":") == 1:
        text, _, tail = text.partition(":")
        port = int(tail) if tail.isdigit() else 0
    ip = _address(text)
    if ip is not None:
        return str(ip), port if port < 65536 else 0
    if _OBFUSCATED.match(text):
        return text, 0
    return None  # "unknown" or garbage: the proxy does not know the client either


def client_view(peer: str, hops: list[Hop], trusted: TrustedProxies) -> ClientView | None:
    """Walk the hops right to left while the writer of each is trusted.

    The rightmost hop was written by ``peer``, each earlier one by the node
    named in the hop after it.  The first node that is not a trusted proxy is
    the client.  None when ``peer`` is not trusted or the hops name nobody.
    """
    if peer not in trusted or not hops:
        return None
    view: ClientView | None = None
    for hop in reversed(hops):
        node = _node(hop.node)
        if node is None:
            break  # keep what the last trusted hop said (or nothing)
        host = hop.host if hop.host and _HOST.match(hop.host) else None
        proto = hop.proto.lower() if hop.proto and hop.proto.lower() in ("http", "https") else None
        view = ClientView(node[0], node[1], host, proto)
        if node[0] not in trusted:
            break
    return view


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """All lines of a header, joined as RFC 9110 section 5.3 allows."""
    values = [v.decode("latin-1") for k, v in headers if k == name]
    return ", ".join(values) if values else None


class ForwardedMiddleware:
    """Puts the real client (and host, scheme) in the scope, for trusted peers only."""

    def __init__(self, app: ASGIApp, trusted: TrustedProxies,
                 header: ForwardedHeader = "x-forwarded-for") -> None:
        self.app = app
        self.trusted = trusted
        self.header = header
        self._warned: set[str] = set()

    def hops(self, headers: list[tuple[bytes, bytes]]) -> list[Hop]:
        if self.header == "forwarded":
            value = _header(headers, b"forwarded")
            return parse_forwarded(value) if value else []
        xff = _header(headers, b"x-forwarded-for")
        if not xff:
            return []
        return parse_x_forwarded(xff, _header(headers, b"x-forwarded-host"),
                                 _header(headers, b"x-forwarded-proto"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("client"):
            peer = scope["client"][0]
            if peer in self.trusted:
                self._apply(scope, client_view(peer, self.hops(scope["headers"]), self.trusted))
            else:
                self._warn_untrusted(scope, peer)
        await self.app(scope, receive, send)

    @staticmethod
    def _apply(scope: Scope, view: ClientView | None) -> None:
        # In place, as uvicorn's access log keeps a reference to this very dict.
        if view is None:
            return
        scope["client"] = (view.address, view.port)
        if view.proto:
            scope["scheme"] = view.proto if scope["type"] == "http" else (
                "wss" if view.proto == "https" else "ws")
        if view.host:
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"host"]
            scope["headers"].append((b"host", view.host.encode("latin-1")))

    def _warn_untrusted(self, scope: Scope, peer: str) -> None:
        """Once per peer: a proxy not in ``trusted_proxies`` makes its clients one client."""
        if peer in self._warned or len(self._warned) >= _WARNED_PEERS_MAX:
            return
        name = b"forwarded" if self.header == "forwarded" else b"x-forwarded-for"
        if any(k == name for k, _ in scope["headers"]):
            self._warned.add(peer)
            log.warning("%s sends %s but is not in trusted_proxies: the header is ignored, "
                        "and if it is your proxy, all its clients share one rate-limit budget",
                        peer, name.decode())
