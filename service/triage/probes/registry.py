"""Every probe, by the name triage.yaml uses (one line per probe)."""

from __future__ import annotations

from service.remediate.kube import Kube
from service.triage.probes.base import Probe
from service.triage.probes.health import HealthProbe
from service.triage.probes.pods import PodsProbe
from service.triage.probes.postgres import PostgresProbe
from service.triage.probes.prometheus import PrometheusProbe
from service.triage.probes.redis import RedisProbe
from service.triage.probes.rollouts import RolloutsProbe


def build_probes(kube: Kube | None) -> dict[str, Probe]:
    probes: list[Probe] = [
        HealthProbe(),
        PodsProbe(kube),
        RolloutsProbe(kube),
        PrometheusProbe(),
        PostgresProbe(),
        RedisProbe(),
    ]
    return {p.name: p for p in probes}
