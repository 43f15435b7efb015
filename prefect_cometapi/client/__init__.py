"""The Images API client: everything between the tasks and httpx.

:class:`CometAPIClient` and :class:`AsyncCometAPIClient` (:mod:`.drivers`) drive one sans-I/O
exchange (:mod:`.core`): request building and validation (:mod:`.params`, :mod:`.rules`), the
answer's checks and parsing (:mod:`.response`), the capped body reader (:mod:`.body`) and the
API key's resolution (:mod:`.keys`).

The two clients are loaded on first use, so that the modules below them (the API's rules, the
parameter table) can be imported by the price table and the emulator without the clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect_cometapi.client.drivers import AsyncCometAPIClient, CometAPIClient

__all__ = ["AsyncCometAPIClient", "CometAPIClient"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from prefect_cometapi.client import drivers

        return getattr(drivers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
