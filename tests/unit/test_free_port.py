"""free_port hands out ports below the kernel's ephemeral range, so a port the
bench chose for the gateway cannot be handed to the gateway's own Janus by
the kernel before the gateway binds it (a soak run lost its gateway so)."""

from __future__ import annotations

import socket
from pathlib import Path

from gateway.janus.process import PORT_RANGE, free_port


def test_ports_come_from_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert PORT_RANGE.stop <= low
    ports = {free_port() for _ in range(50)}
    assert all(p in PORT_RANGE for p in ports)


def test_a_port_in_use_is_never_handed_out() -> None:
    listeners = []
    try:
        for port in PORT_RANGE[:200]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sock.listen()
            listeners.append(sock)
        taken = {s.getsockname()[1] for s in listeners}
        assert all(free_port() not in taken for _ in range(200))
    finally:
        for sock in listeners:
            sock.close()
