"""Remediation control for people: the state, the kill switch, resuming a held target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.context import Context
from service.errors import Conflict, NotFound
from service.ruleset.remediation import Mode
from service.store.control import Hold, Pause
from service.store.remediations import RemediationJob


@dataclass(frozen=True, slots=True)
class RemediationState:
    mode: Mode  # INCIDENTD_REMEDIATION_MODE
    rules_mode: Mode  # remediation.yaml's
    cluster: bool  # an API server is configured
    paused_by_config: bool
    pause: Pause  # the stored kill switch
    holds: list[Hold]
    remediations: list[RemediationJob]  # the newest

    @property
    def paused(self) -> bool:
        return self.paused_by_config or self.pause.paused


class RemediationControl:
    def __init__(self, ctx: Context, *, cluster: bool, wake: Callable[[], None]) -> None:
        """``cluster``: an API server is configured; ``wake``: the remediation worker."""
        self._store = ctx.store
        self._settings = ctx.settings
        self._metrics = ctx.metrics
        self._clock = ctx.clock
        self._rules_mode: Mode = ctx.rules.remediation.mode
        self._cluster = cluster
        self._wake = wake

    async def state(self, newest: int = 50) -> RemediationState:
        return RemediationState(
            mode=self._settings.remediation_mode,
            rules_mode=self._rules_mode,
            cluster=self._cluster,
            paused_by_config=self._settings.remediation_paused,
            pause=await self._store.control.pause_state(),
            holds=await self._store.control.holds(),
            remediations=await self._store.remediations.list(limit=newest),
        )

    async def pause(self, by: str, reason: str | None) -> Pause:
        await self._store.control.set_paused(True, by, reason, self._clock.now())
        self._metrics.remediation_paused.set(1)
        return await self._store.control.pause_state()

    async def resume(self, by: str) -> Pause:
        if self._settings.remediation_paused:
            raise Conflict("paused by configuration (INCIDENTD_REMEDIATION_PAUSED); change it there")
        await self._store.control.set_paused(False, by, None, self._clock.now())
        self._metrics.remediation_paused.set(0)
        self._wake()
        return await self._store.control.pause_state()

    async def resume_target(self, target_key: str) -> list[Hold]:
        """Let automation act on a target again after it stopped there."""
        if not await self._store.control.clear_hold(target_key):
            raise NotFound(f"automation is not stopped for {target_key}")
        return await self._store.control.holds()

    async def job(self, remediation_id: str) -> RemediationJob:
        job = await self._store.remediations.get(remediation_id)
        if job is None:
            raise NotFound(f"no remediation {remediation_id}")
        return job
