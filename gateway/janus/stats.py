"""A PeerConnection's RTC statistics, as Janus's admin ``handle_info`` reports them.

Why here: the operator API shows per-session bitrate, loss, RTT, NACKs and
PLIs, and only this package may read Janus JSON.  ``handle_info`` gives, per
medium under ``webrtc.media``, ``stats.in``/``stats.out`` (packets, bytes,
``bytes_lastsec``, ``nacks``), ``codecs.codec`` and ``rtcp`` (``rtt``,
``lost``, ``lost-by-remote`` per RTCP source, e.g. ``main``; older releases
spelled it ``rtcp_stats``).  Janus 1.1.2 counts no
PLIs in ``handle_info``; a count appears only where a Janus reports one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gateway.janus.failures import janus_call
from gateway.janus.peer import JanusPeer


@dataclass
class MediumStats:
    mid: str
    kind: str
    codec: str | None
    packets_in: int
    packets_out: int
    bitrate_in: int  # bit/s over the last second
    bitrate_out: int
    packets_lost: int  # lost on the way to Janus (local) plus reported by the remote
    rtt_ms: int | None
    nacks_in: int
    nacks_out: int
    plis: int | None


async def peer_stats(peer: JanusPeer) -> list[MediumStats] | None:
    """Per-medium statistics of ``peer``; None when its node has no admin API."""
    node, session = peer.node, peer.node.session
    if node.admin is None or session is None or peer._closed:
        return None
    with janus_call(node.name):
        info = await node.admin.handle_info(session.id, peer.handle.id)
    return read_handle_info(info)


def read_handle_info(info: dict[str, Any]) -> list[MediumStats]:
    """``handle_info``'s ``info`` object, read into ``MediumStats`` per medium."""
    out = []
    for mid, medium in ((info.get("webrtc") or {}).get("media") or {}).items():
        stats = medium.get("stats") or {}
        inbound, outbound = stats.get("in") or {}, stats.get("out") or {}
        rtcp = _rtcp_sources(medium.get("rtcp") or medium.get("rtcp_stats") or {})
        rtts = [int(s["rtt"]) for s in rtcp if isinstance(s.get("rtt"), (int, float))]
        lost = sum(int(s.get("lost", 0) or 0) + int(s.get("lost-by-remote", 0) or 0) for s in rtcp)
        plis = [int(v) for d in (inbound, outbound) for k, v in d.items()
                if "pli" in k.lower() and isinstance(v, (int, float))]
        codecs = medium.get("codecs") or {}
        out.append(MediumStats(
            mid=str(mid), kind=str(medium.get("type", "")),
            codec=codecs.get("codec") or codecs.get("audio-codec") or codecs.get("video-codec"),
            packets_in=int(inbound.get("packets", 0) or 0),
            packets_out=int(outbound.get("packets", 0) or 0),
            bitrate_in=int(inbound.get("bytes_lastsec", 0) or 0) * 8,
            bitrate_out=int(outbound.get("bytes_lastsec", 0) or 0) * 8,
            packets_lost=lost,
            rtt_ms=max(rtts) if rtts else None,
            nacks_in=int(inbound.get("nacks", 0) or 0),
            nacks_out=int(outbound.get("nacks", 0) or 0),
            plis=sum(plis) if plis else None,
        ))
    return out


def _rtcp_sources(rtcp: dict[str, Any]) -> list[dict[str, Any]]:
    """The RTCP stat objects (``main``, ``video-simulcast-1``... or one per kind)."""
    if any(k in rtcp for k in ("rtt", "lost", "base")):
        return [rtcp]
    return [v for v in rtcp.values() if isinstance(v, dict)]


def as_json(stats: list[MediumStats]) -> list[dict[str, Any]]:
    return [asdict(s) for s in stats]
