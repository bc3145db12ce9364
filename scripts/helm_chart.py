"""Lint and render a Helm chart with Helm's own Go library, no helm binary (run by helm-lint.sh).

Runs inside .venv-helm (Python >= 3.12), which holds:

- helm-sdkpy: `helm lint` (Helm v4 library through cffi). Its lint report keeps each
  finding's severity and path but not the message (the Go error marshals to ``{}``),
  and it has no offline render (`helm template`): install/upgrade need a cluster.
- helm-python-sdk: `helm lint --strict` with messages and values, values.schema.json
  validation and an offline render (`helm template`), also Helm v4's Go library.
- kubernetes-validate: the rendered objects against the Kubernetes OpenAPI schemas,
  strict (unknown fields are errors). Kinds it has no schema for (CRDs such as a
  ServiceMonitor) are reported and skipped.

Exit status 0 only when every step is clean; the rendered manifests (one YAML stream, like
`helm template`) go to --output or stdout, the report to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _load_values(files: list[Path]) -> dict[str, Any]:
    import helm_python
    import yaml

    merged: dict[str, Any] = {}
    for path in files:
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise SystemExit(f"{path}: values must be a mapping")
        merged = _merge(merged, doc)
    # Round-trip through Helm's own values parser, as `helm -f` does.
    return helm_python.values_from_yaml(yaml.safe_dump(merged)) if merged else {}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def lint_with_helm_sdkpy(chart: Path) -> list[str]:
    """`helm lint` (default values) through helm-sdkpy; warnings count as errors (--strict)."""
    import helm_sdkpy

    async def run() -> dict[str, Any]:
        config = helm_sdkpy.Configuration(namespace="default")
        return await helm_sdkpy.Lint(config).run(str(chart))

    report = asyncio.run(run())
    problems = []
    for message in report.get("Messages") or []:
        severity = int(message.get("Severity", 0))
        line = f"helm-sdkpy lint: [{SEVERITY.get(severity, severity)}] {message.get('Path')}"
        if severity >= 2:
            problems.append(line)
        _say(line)
    if report.get("Errors") and not problems:
        problems.append(f"helm-sdkpy lint: {len(report['Errors'])} error(s)")
    return problems


def lint_with_helm_python(chart: Path, values: dict[str, Any], kube_version: str) -> list[str]:
    """`helm lint --strict` with the given values, messages included."""
    import helm_python

    report = helm_python.lint(chart, values or None, strict=True, kube_version=kube_version)
    problems = []
    for message in report.get("messages") or []:
        severity = int(message.get("severity", 0))
        text = str(message.get("error", "")).strip()
        line = f"helm lint: [{SEVERITY.get(severity, severity)}] {message.get('path')}: {text}"
        if severity >= 2:
            problems.append(line)
        _say(line)
    if report.get("errors") and not problems:
        problems += [f"helm lint: {str(error).strip()}" for error in report["errors"]]
    return problems


def render(chart: Path, values: dict[str, Any], release: str, namespace: str) -> dict[str, str]:
    """`helm template` with the given values: template path -> manifest; NOTES.txt included."""
    import helm_python

    loaded = helm_python.Chart.load(chart)
    loaded.validate_schema(values or None)
    return loaded.render(values or None, name=release, namespace=namespace, is_install=True)


def validate_objects(documents: list[tuple[str, Any]], kube_version: str) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate import SchemaNotFoundError, ValidationError

    version = kube_version.removeprefix("v")
    problems = []
    for source, obj in documents:
        label = f"{source}: {obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except SchemaNotFoundError:
            _say(f"kubernetes-validate: {label}: no schema for {obj.get('apiVersion')}, not checked")
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"kubernetes-validate: {label}: {where}: {exc.message}")
    return problems


def _split(
    manifests: dict[str, str], notes: Path | None, problems: list[str]
) -> tuple[list[str], list[tuple[str, Any]]]:
    """The rendered files as `helm template` prints them, and their objects; NOTES.txt
    goes to ``notes``, what is not a Kubernetes object to ``problems``."""
    import yaml

    stream: list[str] = []
    documents: list[tuple[str, Any]] = []
    for source in sorted(manifests):
        text = manifests[source]
        if source.endswith("NOTES.txt"):
            if notes:
                notes.write_text(text)
            continue
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            problems.append(f"helm template: {source}: not YAML: {exc}")
            continue
        if not docs:
            continue
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                problems.append(f"helm template: {source}: a document without kind/apiVersion")
                continue
            documents.append((source, doc))
        # Helm's own text, as `helm template` prints it.
        body = text.strip("\n").removeprefix("---\n")
        stream.append(f"---\n# Source: {source}\n{body}\n")
    return stream, documents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart", type=Path)
    parser.add_argument("-f", "--values", type=Path, action="append", default=[], help="values file")
    parser.add_argument("-o", "--output", type=Path, help="write the rendered manifests here")
    parser.add_argument("--release", default="incidentd")
    parser.add_argument("--namespace", default="incidentd")
    parser.add_argument("--kube-version", default="v1.33.0")
    parser.add_argument("--notes", type=Path, help="write the rendered NOTES.txt here")
    args = parser.parse_args(argv)

    chart: Path = args.chart.resolve()
    if not (chart / "Chart.yaml").is_file():
        _say(f"{chart}: not a chart (no Chart.yaml)")
        return 2
    values = _load_values(args.values)

    problems = lint_with_helm_sdkpy(chart)
    problems += lint_with_helm_python(chart, values, args.kube_version)
    try:
        manifests = render(chart, values, args.release, args.namespace)
    except Exception as exc:  # HelmRenderError, HelmValuesError: the message is Helm's own
        problems.append(f"helm template: {exc.__class__.__name__}: {str(exc).strip()}")
        manifests = {}

    stream, documents = _split(manifests, args.notes, problems)
    if manifests and not documents:
        problems.append("helm template: the chart renders no objects")
    problems += validate_objects(documents, args.kube_version)

    rendered = "".join(stream)
    if args.output:
        args.output.write_text(rendered)
    elif not problems:
        sys.stdout.write(rendered)

    if problems:
        _say(f"\n{chart.name}: {len(problems)} problem(s):")
        for problem in problems:
            _say(f"  {problem}")
        return 1
    kinds = ", ".join(f"{obj['kind']}/{obj['metadata']['name']}" for _, obj in documents)
    _say(f"{chart.name}: lint clean, {len(documents)} objects rendered and valid: {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
