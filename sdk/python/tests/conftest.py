from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sidecar_double import SidecarDouble


@pytest.fixture
async def sidecar() -> AsyncIterator[SidecarDouble]:
    double = SidecarDouble()
    await double.start()
    try:
        yield double
    finally:
        await double.stop()
