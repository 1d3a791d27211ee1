"""The loop that brings a down tier back by itself, for tiers whose probes are free.

A down ``openai`` or ``local`` tier (or a Modal tier kept at one container or more) is tried
with one ``GET /health`` each time its backoff runs out (``WarmthTracker.trigger_trial``):
healthy makes it warm, anything else keeps it down for twice as long, up to the cap. A
scale-to-zero Modal tier is not probed here (a probe boots a GPU); its trial is the first
request after the backoff (``gateway.routing.dispatch``). Start it from the app's lifespan beside
keep-warm, cancel it on shutdown; every worker may run it, the trial's lease lets one probe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.warmth.types import RECOVERY_TICK_S

if TYPE_CHECKING:
    from gateway.warmth.tracker import Probe, WarmthTracker

log = logging.getLogger(__name__)


async def run_recovery(
    tracker: WarmthTracker,
    probes: Mapping[str, Probe],
    *,
    interval_s: float = RECOVERY_TICK_S,
    ticks: int | None = None,
) -> None:
    """Every ``interval_s``, start the trial of each free-probe tier that is due. ``ticks``
    bounds the loop (tests)."""
    done = 0
    while ticks is None or done < ticks:
        done += 1
        for tier, probe in probes.items():
            try:
                if await tracker.trial_due(tier):
                    log.info("recovery: trying down tier %s", tier)
                    tracker.trigger_trial(tier, probe)
            except Exception as exc:  # noqa: BLE001 - one bad tick must not end recovery
                log.warning("recovery: tier %s skipped this tick (%s)", tier, type(exc).__name__)
        await tracker.clock.sleep(interval_s)
