"""Raw sockets (sockio.py): a connect whose deadline the watchdog enforced."""

from __future__ import annotations

import socket

import pytest

from gossipmesh.proxy.clock import MonotonicClock
from gossipmesh.proxy.sockio import ConnectFailed, SockIO, connect_raw


class ExpiresOnWake:
    """A watch whose deadline passes just as the connect's wait ends: the watchdog closes the
    socket after the wake-up and before the connecting task runs again (seen under load)."""

    def __init__(self) -> None:
        self.clock = MonotonicClock()
        self.guards: list[SockIO] = []

    def add(self, io: SockIO) -> None:
        self.guards.append(io)

    def discard(self, io: SockIO) -> None:
        io.timed_out = True
        io.close()


async def test_a_connect_closed_by_the_watchdog_after_its_wake_up_is_a_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        watch = ExpiresOnWake()
        for _ in range(20):  # loopback may finish a connect at once: no wait, nothing to race
            if watch.guards:
                break
            try:
                sock = await connect_raw("127.0.0.1", port, 1000, watch)
            except ConnectFailed as e:
                assert "timed out" in str(e)
                assert watch.guards and watch.guards[-1].sock.fileno() == -1
            else:
                assert not watch.guards
                sock.close()
        if not watch.guards:
            pytest.skip("every loopback connect finished at once")
