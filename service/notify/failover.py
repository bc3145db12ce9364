"""Failover: a failed trigger handed to the fallback pagers of its roles (contacts.yaml)."""

from __future__ import annotations

import logging

from service.models import PageAction
from service.ruleset.models import FOLLOW_UP_NAMES, RuleSet
from service.store.pages import NewPage, PageJob, PageJobs

log = logging.getLogger("service.notify.worker")


class Failover:
    def __init__(self, rules: RuleSet, pagers: set[str], jobs: PageJobs, after: int) -> None:
        self._rules = rules
        self._pagers = pagers
        self._jobs = jobs
        self._after = after

    async def pages(self, job: PageJob, attempt: int, retrying: bool) -> list[NewPage]:
        """The pages this failed trigger is handed to: the same page through each fallback
        pager of its roles that has not got it yet. After ``self._after`` failures, or at
        once when the pager refused for good (nothing else would reach anyone)."""
        if job.action is not PageAction.TRIGGER or (retrying and attempt < self._after):
            return []
        if job.integration in FOLLOW_UP_NAMES:
            return []  # a status page that is down is no reason to page anyone elsewhere
        wanted = [p for p in self._rules.contacts.fallbacks_for(job.roles) if p != job.integration]
        if not wanted:
            return []
        missing = [p for p in wanted if p not in self._pagers]
        if missing:
            log.error(
                "page for %s: fallback pager(s) %s of contacts.yaml not set up in this process",
                job.incident_id,
                ", ".join(missing),
            )
        # Once per pager: a page it already has (failed over earlier, or a configured pager
        # paged from the start) is not handed over again (the job table would ignore it too).
        has = {
            v.integration
            for v in await self._jobs.for_incident(job.incident_id)
            if v.action == PageAction.TRIGGER and v.opening == job.opening and v.target == job.target
        }
        return [
            NewPage(
                job.incident_id,
                name,
                PageAction.TRIGGER,
                job.opening,
                job.target,
                tuple(job.roles),
                job.message,
                job.by,
            )
            for name in wanted
            if name in self._pagers and name not in has
        ]
