"""A running service's ``GET /metrics``, read as Prometheus reads it."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.support.service import RunningService

# The series each metric type exposes, after its family name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("", "_sum", "_count", "_created"),
}


@dataclass(frozen=True, slots=True)
class Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    # Every series name the service declares (HELP/TYPE), with or without samples yet.
    names: frozenset[str]
    text: str

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when there is none (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples whose labels include these (a PromQL ``sum``)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def labelsets(self, name: str) -> list[dict[str, str]]:
        return [dict(ls) for (n, ls) in self.samples if n == name]


async def scrape(svc: RunningService) -> Scrape:
    resp = await svc.client.get(f"{svc.url}/metrics")
    assert resp.status_code == 200, resp.text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    names: set[str] = set()
    for family in text_string_to_metric_families(resp.text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return Scrape(samples, frozenset(names), resp.text)
