"""What the app holds while it runs: built by the lifespan, reached by handlers through
``request.app.state.runtime``. No module-level state anywhere else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.dispatch import Dispatcher, Warmth
from gateway.observability import Metrics
from gateway.settings import Settings
from gateway.upstream import TierClient


@dataclass
class Runtime:
    settings: Settings
    clients: dict[str, TierClient]
    warmth: Warmth
    dispatcher: Dispatcher
    checker: Any
    metrics: Metrics
    started: bool = field(default=False)

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, tier in self.settings.tiers.items():
            view = self.warmth.view(name)
            out[name] = {
                "tier": name,
                "kind": tier.kind,
                "configured": tier.configured,
                "state": "warm" if view.warm else ("cold" if view.usable else "unconfigured"),
                "usable": view.usable,
                "warm": view.warm,
                "eta_s": view.eta_s,
            }
        return out

    def tier_states(self) -> dict[str, str]:
        return {name: str(tier["state"]) for name, tier in self.status().items()}
