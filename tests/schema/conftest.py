import socket

import pytest
from django.core.servers.basehttp import ThreadedWSGIServer


class NoDelayWSGIServer(ThreadedWSGIServer):
    """Django's live server answers headers and body in separate writes; with Nagle's algorithm
    and the client's delayed ACK each response then waits ~40 ms. TCP_NODELAY removes the wait."""

    def get_request(self):
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address


@pytest.fixture(scope="session")
def _live_server_without_nagle():
    from django.test.testcases import LiveServerThread

    original, LiveServerThread.server_class = LiveServerThread.server_class, NoDelayWSGIServer
    yield
    LiveServerThread.server_class = original


@pytest.fixture(scope="session")
def live_server(_live_server_without_nagle, live_server):
    """pytest-django's live server, without Nagle's delay on each response."""
    return live_server
