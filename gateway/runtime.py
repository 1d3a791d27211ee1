"""What the app holds while it runs: built by the lifespan, reached by handlers through
``request.app.state.runtime``. No module-level state anywhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.dispatch import Dispatcher
from gateway.observability import Metrics
from gateway.schema_check import SchemaChecker
from gateway.settings import Settings
from gateway.tierstate import TierStates
from gateway.upstream import TierClient


@dataclass
class Runtime:
    settings: Settings
    clients: dict[str, TierClient]
    warmth: TierStates
    dispatcher: Dispatcher
    checker: SchemaChecker
    metrics: Metrics

    async def start(self) -> None:
        await self.warmth.start()

    async def aclose(self) -> None:
        await self.warmth.aclose()
        for client in self.clients.values():
            await client.aclose()

    async def status(self) -> dict[str, Any]:
        return await self.warmth.status(self.metrics.counts())
