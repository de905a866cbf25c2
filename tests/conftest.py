"""Fixtures shared across test folders."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def chroma_server():
    """A real ``chroma run`` server on a free loopback port, started on first use and stopped at the end
    of the session."""
    from tests._chroma_server import start_chroma

    server = start_chroma()
    yield server
    server.stop()
