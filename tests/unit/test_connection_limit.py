"""How many connections a process holds: max_connections, unless the open-files limit runs out first."""

from __future__ import annotations

import pytest

from server.cli.runtime import RESERVED_FILES, connection_limit
from server.settings import Settings


@pytest.mark.parametrize(
    ("open_files", "max_connections", "pool_size", "limit"),
    [
        pytest.param(65536, 4096, 20, 4096, id="systemd-unit-limit-room-to-spare"),
        pytest.param(1024, 4096, 20, 1024 - RESERVED_FILES - 20, id="default-soft-limit-clamps"),
        pytest.param(1024, 4096, 100, 1024 - RESERVED_FILES - 100, id="bigger-pool-leaves-fewer"),
        pytest.param(1024, 500, 20, 500, id="below-the-limit-as-set"),
        pytest.param(100, 4096, 20, 16, id="absurdly-low-limit-still-serves-some"),
    ],
)
def test_connection_limit(open_files: int, max_connections: int, pool_size: int, limit: int) -> None:
    settings = Settings(max_connections=max_connections, pool_size=pool_size)
    assert connection_limit(settings, open_files) == limit
