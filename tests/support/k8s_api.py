"""A real HTTP server standing in for the Kubernetes API server, for what remediation
touches: Deployments (and their ``scale``), ReplicaSets, Pods (delete, eviction), Nodes
and PodDisruptionBudgets. The real ``kubernetes_asyncio`` client talks to it.

It keeps the contracts our code leans on, as the API server does:

- one resourceVersion counter, bumped by every write; a write that names a
  resourceVersion (in the object or in delete preconditions) other than the stored one
  is a 409 Conflict, and a write that changes nothing bumps nothing;
- ``dryRun=All`` computes the answer, errors included (404, 409, 422, a PDB's 429), and
  changes nothing;
- JSON patch (RFC 6902), merge patch (RFC 7386), and strategic merge patch taken as a
  merge patch that merges the lists Kubernetes merges by key (containers by name, ...);
- status is a subresource: a patch cannot write it, and the server keeps
  ``metadata.generation``; an eviction a PodDisruptionBudget forbids is a 429;
- every error is a ``Status`` object.

A deployment controller runs synchronously after each real deployment write: a new pod
template gets a new ReplicaSet revision, returning to an older template re-uses its
ReplicaSet under a new, higher revision (the old number disappears), and status follows
``set_healthy``. The write's own answer is the object as written, before the controller
ran, as from the real server; the next read sees the controller's work.

Left out on purpose: watches, pagination, server-side apply, graceful deletion (a
deleted pod is gone at once) and the ReplicaSet controller (nothing recreates pods).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.fake_http import LoopbackServer

Obj = dict[str, Any]


class PlainText(dict[str, Any]):
    """A text answer (a pod's log) where the API otherwise answers JSON objects."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
TEMPLATE_HASH = "pod-template-hash"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
WRITE_METHODS = frozenset({"PATCH", "PUT", "POST", "DELETE"})
MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"
EVICTION_BLOCKED = "Cannot evict pod as it would violate the pod's disruption budget."
VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0",
    "gitCommit": "7c48c2bd72b9bf5c44d21d7338cc7bea77d0ad2a",
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T17:27:03Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(code: int, message: str, *, reason: str | None = None, details: Obj | None = None) -> Obj:
    """A failure ``Status`` as the API server writes it."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, ""),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(self, code: int, message: str, *, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = status_body(code, message, details=details)


@dataclass(frozen=True, slots=True)
class Request:
    """One request served, with the status it was answered."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any  # the decoded JSON, the text if it was not JSON, None if empty
    status: int

    @property
    def dry_run(self) -> bool:
        return _is_dry_run(self.query, self.body)


@dataclass(frozen=True, slots=True)
class _Failure:
    method: str
    path_suffix: str
    status: int
    body: Obj | None
    dry_run: bool | None


@dataclass(frozen=True, slots=True)
class _Kind:
    plural: str
    kind: str
    api_version: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def _details(self, name: str, kind: str) -> Obj:
        return (
            {"name": name, "group": self.group, "kind": kind} if self.group else {"name": name, "kind": kind}
        )

    def not_found(self, name: str) -> ApiError:
        return ApiError(404, f'{self.resource} "{name}" not found', details=self._details(name, self.plural))

    def conflict(self, name: str, why: str) -> ApiError:
        message = f'Operation cannot be fulfilled on {self.resource} "{name}": {why}'
        return ApiError(409, message, details=self._details(name, self.plural))

    def invalid(
        self, name: str, field: str, value: Any = None, why: str = "", *, required: bool = False
    ) -> ApiError:
        detail = "Required value" if required else f"Invalid value: {json.dumps(value)}: {why}"
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        details = self._details(name, self.kind)
        reason = "FieldValueRequired" if required else "FieldValueInvalid"
        details["causes"] = [{"reason": reason, "message": detail, "field": field}]
        return ApiError(422, f'{kind} "{name}" is invalid: {field}: {detail}', details=details)


DEPLOYMENTS = _Kind("deployments", "Deployment", "apps/v1")
REPLICASETS = _Kind("replicasets", "ReplicaSet", "apps/v1")
PODS = _Kind("pods", "Pod", "v1")
NODES = _Kind("nodes", "Node", "v1", namespaced=False)
PDBS = _Kind("poddisruptionbudgets", "PodDisruptionBudget", "policy/v1")
SCALE = _Kind("scale", "Scale", "autoscaling/v1")
_KINDS = {k.plural: k for k in (DEPLOYMENTS, REPLICASETS, PODS, NODES, PDBS)}
_GENERATION_KINDS = (DEPLOYMENTS, REPLICASETS, PDBS)  # the server keeps metadata.generation for these
_OWNER_API = {"ReplicaSet": "apps/v1", "DaemonSet": "apps/v1", "StatefulSet": "apps/v1", "Job": "batch/v1"}
_PATH = re.compile(
    r"/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)(?:/namespaces/(?P<ns>[^/]+))?"
    r"/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?"
)


class FakeKubernetes(LoopbackServer):
    """Test helpers are synchronous and thread-safe; reads hand out deep copies."""

    # A real API server refuses a request without the service account's token.
    TOKEN = "k8s-stand-in-token"

    def __init__(self, token: str = TOKEN) -> None:
        super().__init__()
        self.token = token
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {plural: {} for plural in _KINDS}
        self._healthy: dict[tuple[str, str], bool] = {}
        self._rv = 0
        self._requests: list[Request] = []
        self._failures: list[_Failure] = []
        # Called in the handler thread outside the lock, so a hook may change the cluster
        # (say ``set_image``) between a client's read and its write.
        self.on_request: Callable[[str, str, dict[str, str]], None] | None = None
        self.before_write: Callable[[str, str], None] | None = None  # only writes that are not dry runs
        self.errors: list[str] = []  # tracebacks of the fake's own bugs and of failed hooks
        self._logs: dict[tuple[str, str], str] = {}  # pod logs (set_pod_log)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    # -- test-facing ----------------------------------------------------------

    def add_deployment(
        self,
        namespace: str,
        name: str,
        *,
        image: str = "app:v1",
        replicas: int = 2,
        labels: dict[str, str] | None = None,
        paused: bool = False,
        healthy: bool = True,
        created_at: datetime | None = None,
    ) -> Obj:
        """The Deployment and, unless paused, its first ReplicaSet (created at ``created_at``)."""
        labels = dict(labels) if labels is not None else {"app": name}
        spec: Obj = {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        }
        if paused:  # omitempty, as the API server writes it
            spec["paused"] = True
        with self.lock:
            key = (namespace, name)
            if key in self._objects["deployments"]:
                raise ValueError(f"deployment {namespace}/{name} already exists")
            meta = self._new_meta(namespace, name, labels, created_at)
            meta["generation"] = 1
            self._objects["deployments"][key] = {"metadata": meta, "spec": spec, "status": {}}
            self._healthy[key] = healthy
            self._reconcile(key, created_at)
            return self.deployment(namespace, name)

    def set_image(self, namespace: str, name: str, image: str, *, at: datetime | None = None) -> None:
        """A user's rollout of a new image; the new ReplicaSet is created ``at``."""
        with self.lock:
            deployment = self._get(DEPLOYMENTS, namespace, name)
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            if container.get("image") == image:
                return
            container["image"] = image
            deployment["metadata"]["generation"] += 1
            self._stamp(deployment)
            self._reconcile((namespace, name), at)

    def set_healthy(self, namespace: str, name: str, healthy: bool) -> None:
        """Whether the deployment's pods come up: status, conditions, ready counts."""
        with self.lock:
            self._get(DEPLOYMENTS, namespace, name)
            self._healthy[(namespace, name)] = healthy
            self._reconcile((namespace, name))

    def add_pod(
        self,
        namespace: str,
        name: str,
        *,
        labels: dict[str, str],
        node: str | None = None,
        ready: bool = True,
        owner_kind: str | None = None,
        owner_name: str | None = None,
    ) -> Obj:
        if (owner_kind is None) != (owner_name is None):
            raise ValueError("give both owner_kind and owner_name, or neither")
        with self.lock:
            if (namespace, name) in self._objects["pods"]:
                raise ValueError(f"pod {namespace}/{name} already exists")
            meta = self._new_meta(namespace, name, labels)
            spec: Obj = {"containers": [{"name": "main", "image": "app:v1"}]}
            if owner_kind is not None and owner_name is not None:
                owner = self._objects["replicasets"].get((namespace, owner_name))
                if owner_kind == "ReplicaSet" and owner is not None:
                    spec = copy.deepcopy(owner["spec"]["template"]["spec"])
                meta["ownerReferences"] = [
                    {
                        "apiVersion": _OWNER_API.get(owner_kind, "apps/v1"),
                        "kind": owner_kind,
                        "name": owner_name,
                        "uid": owner["metadata"]["uid"] if owner is not None else str(uuid.uuid4()),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ]
            if node is not None:
                spec["nodeName"] = node
            scheduled = "True" if node is not None else "False"
            status = {
                "phase": "Running" if node is not None else "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": scheduled},
                    {"type": "Ready", "status": "True" if ready and node is not None else "False"},
                ],
            }
            pod = {"metadata": meta, "spec": spec, "status": status}
            self._objects["pods"][(namespace, name)] = pod
            return copy.deepcopy(pod)

    def add_node(self, name: str, *, labels: dict[str, str] | None = None) -> Obj:
        with self.lock:
            labels = dict(labels) if labels is not None else {"kubernetes.io/hostname": name}
            node = {
                "metadata": self._new_meta(None, name, labels),
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
            }
            self._objects["nodes"][("", name)] = node
            return copy.deepcopy(node)

    def add_pdb(
        self,
        namespace: str,
        name: str,
        *,
        selector: dict[str, str],
        max_unavailable: int | None = None,
        min_available: int | None = None,
    ) -> Obj:
        """A PodDisruptionBudget over pods whose labels include ``selector`` (matchLabels)."""
        if (max_unavailable is None) == (min_available is None):
            raise ValueError("give exactly one of max_unavailable and min_available (as the API requires)")
        spec: Obj = {"selector": {"matchLabels": dict(selector)}}
        if max_unavailable is not None:
            spec["maxUnavailable"] = max_unavailable
        else:
            spec["minAvailable"] = min_available
        with self.lock:
            meta = self._new_meta(namespace, name, {})
            meta["generation"] = 1
            self._objects["poddisruptionbudgets"][(namespace, name)] = {"metadata": meta, "spec": spec}
            return self._out(PDBS, self._objects["poddisruptionbudgets"][(namespace, name)])

    def deployment(self, namespace: str, name: str) -> Obj:
        with self.lock:
            return copy.deepcopy(self._get(DEPLOYMENTS, namespace, name))

    def replicasets(self, namespace: str) -> list[Obj]:
        """The namespace's ReplicaSets, oldest revision first."""
        with self.lock:
            found = [rs for (ns, _), rs in self._objects["replicasets"].items() if ns == namespace]
            return copy.deepcopy(sorted(found, key=lambda rs: (_revision(rs), rs["metadata"]["name"])))

    def pods(self, namespace: str | None = None) -> list[Obj]:
        with self.lock:
            found = sorted(
                (key, pod) for key, pod in self._objects["pods"].items() if namespace in (None, key[0])
            )
            return copy.deepcopy([pod for _, pod in found])

    def pod(self, namespace: str, name: str) -> Obj | None:
        with self.lock:
            return copy.deepcopy(self._objects["pods"].get((namespace, name)))

    def set_pod_status(
        self,
        namespace: str,
        name: str,
        *,
        phase: str = "Running",
        restarts: int = 0,
        waiting: str | None = None,
        last_terminated: str | None = None,
        ready: bool = True,
    ) -> None:
        """The pod's status as the kubelet reports it: a crash loop is ``waiting=
        "CrashLoopBackOff"``, ``restarts`` > 0 and ``last_terminated="Error"``."""
        with self.lock:
            pod = self._get(PODS, namespace, name)
            state: Obj = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
            last: Obj = {"terminated": {"reason": last_terminated, "exitCode": 1}} if last_terminated else {}
            pod["status"] = {
                "phase": phase,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [
                    {
                        "name": "main",
                        "ready": ready,
                        "restartCount": restarts,
                        "state": state,
                        "lastState": last,
                    }
                ],
            }
            self._stamp(pod)

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        """What ``GET .../pods/<name>/log`` answers (``tailLines`` honoured)."""
        with self.lock:
            self._get(PODS, namespace, name)
            self._logs[(namespace, name)] = text

    def node(self, name: str) -> Obj:
        with self.lock:
            return copy.deepcopy(self._get(NODES, None, name))

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    @property
    def requests(self) -> list[Request]:
        with self.lock:
            return list(self._requests)

    @property
    def mutations(self) -> list[Request]:
        """Writes that succeeded and were not dry runs."""
        return [r for r in self.requests if r.method in WRITE_METHODS and r.status < 300 and not r.dry_run]

    def fail_next(
        self,
        method: str,
        path_suffix: str,
        status: int,
        body: Obj | None = None,
        *,
        dry_run: bool | None = None,
    ) -> None:
        """Answer the next ``method`` request whose path ends with ``path_suffix`` with
        ``status`` (a Status object unless ``body``), without touching the state.
        ``dry_run``: match only dry runs (True) or only real writes (False)."""
        with self.lock:
            self._failures.append(_Failure(method.upper(), path_suffix, status, body, dry_run))

    # -- serving --------------------------------------------------------------

    def serve(
        self, method: str, target: str, content_type: str, raw: bytes, authorization: str = ""
    ) -> tuple[int, Obj]:
        if authorization != f"Bearer {self.token}":
            with self.lock:
                self._requests.append(Request(method, urlsplit(target).path, {}, content_type, None, 401))
            return 401, status_body(401, "Unauthorized")
        parts = urlsplit(target)
        path, query = parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
        body = _loads(raw)
        dry_run = _is_dry_run(query, body)
        answer: tuple[int, Obj] | None = None
        try:
            if self.on_request is not None:
                self.on_request(method, path, dict(query))
            if self.before_write is not None and method in WRITE_METHODS and not dry_run:
                self.before_write(method, path)
        except Exception as exc:
            with self.lock:
                self.errors.append(traceback.format_exc())
            answer = 500, status_body(500, f"FakeKubernetes test hook failed: {exc!r}")
        with self.lock:
            if answer is None:
                answer = self._take_failure(method, path, dry_run)
            if answer is None:
                try:
                    answer = self._route(method, path, query, content_type, raw)
                except ApiError as err:
                    answer = err.code, err.body
                except Exception as exc:
                    self.errors.append(traceback.format_exc())
                    answer = 500, status_body(500, f"FakeKubernetes failed: {exc!r}")
            self._requests.append(Request(method, path, query, content_type, body, answer[0]))
        return answer

    def _take_failure(self, method: str, path: str, dry_run: bool) -> tuple[int, Obj] | None:
        for i, failure in enumerate(self._failures):
            if (
                failure.method == method
                and path.endswith(failure.path_suffix)
                and failure.dry_run in (None, dry_run)
            ):
                del self._failures[i]
                return failure.status, failure.body or status_body(failure.status, "injected failure")
        return None

    def _route(
        self, method: str, path: str, query: dict[str, str], ctype: str, raw: bytes
    ) -> tuple[int, Obj]:
        if path.rstrip("/") == "/version":
            if method != "GET":
                raise _method_not_allowed()
            return 200, dict(VERSION)
        match = _PATH.fullmatch(path)
        kind = _KINDS.get(match["plural"]) if match else None
        if (
            match is None
            or kind is None
            or kind.api_version != (f"{match['group']}/v1" if match["group"] else "v1")
        ):
            raise ApiError(404, "the server could not find the requested resource")
        ns, name, sub = match["ns"], match["name"], match["sub"]
        if (ns is not None and not kind.namespaced) or (name is not None and kind.namespaced and ns is None):
            raise ApiError(404, "the server could not find the requested resource")
        if query.get("watch", "false").lower() not in ("false", "0"):
            raise ApiError(400, "watch is not supported by FakeKubernetes")
        if name is None:
            if method != "GET":
                raise _method_not_allowed()
            return 200, self._list(kind, ns, query)
        if sub is None:
            if method == "GET":
                return 200, self._out(kind, self._get(kind, ns, name))
            if method in ("PATCH", "PUT") and kind in (DEPLOYMENTS, PODS, NODES):
                return self._update(kind, ns, name, method, query, ctype, raw)
            if method == "DELETE" and kind is PODS:
                return self._delete_pod(ns or "", name, query, raw)
            raise _method_not_allowed()
        if kind is DEPLOYMENTS and sub == "scale":
            if method == "GET":
                return 200, _scale_of(self._get(kind, ns, name))
            if method in ("PATCH", "PUT"):
                return self._update_scale(ns or "", name, method, query, ctype, raw)
            raise _method_not_allowed()
        if kind is PODS and sub == "log":
            if method != "GET":
                raise _method_not_allowed()
            self._get(kind, ns, name)
            lines = self._logs.get((ns or "", name), "").splitlines(keepends=True)
            tail = int(query.get("tailLines") or 0)
            return 200, PlainText("".join(lines[-tail:] if tail else lines))
        if kind is PODS and sub == "eviction":
            if method != "POST":
                raise _method_not_allowed()
            return self._evict(ns or "", name, query, raw)
        raise ApiError(404, "the server could not find the requested resource")

    # -- reads ----------------------------------------------------------------

    def _get(self, kind: _Kind, namespace: str | None, name: str) -> Obj:
        found = self._objects[kind.plural].get((namespace or "", name))
        if found is None:
            raise kind.not_found(name)
        return found

    def _out(self, kind: _Kind, obj: Obj) -> Obj:
        out = {"kind": kind.kind, "apiVersion": kind.api_version, **copy.deepcopy(obj)}
        if kind is PDBS:
            out["status"] = self._pdb_status(obj)
        return out

    def _list(self, kind: _Kind, namespace: str | None, query: dict[str, str]) -> Obj:
        labels = _parse_label_selector(query.get("labelSelector", ""))
        fields = _parse_field_selector(kind, query.get("fieldSelector", ""))
        items = []
        for (ns, _), obj in sorted(self._objects[kind.plural].items()):
            if namespace is not None and ns != namespace:
                continue
            if _matches(labels, obj["metadata"].get("labels") or {}) and all(
                _matches_field(kind, obj, field, op, value) for field, op, value in fields
            ):
                item = self._out(kind, obj)
                del item["kind"], item["apiVersion"]  # list items carry neither
                items.append(item)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    # -- writes ---------------------------------------------------------------

    def _update(
        self,
        kind: _Kind,
        ns: str | None,
        name: str,
        method: str,
        query: dict[str, str],
        ctype: str,
        raw: bytes,
    ) -> tuple[int, Obj]:
        dry_run = _dry_run(query)
        current = self._get(kind, ns, name)
        new = _patched(self._out(kind, current), method, ctype, raw)
        new.pop("kind", None)
        new.pop("apiVersion", None)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        if meta.get("name", name) != name:
            raise ApiError(
                400, f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if kind.namespaced and meta.get("namespace", ns) != ns:
            raise ApiError(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        cur_meta = current["metadata"]
        if meta.get("uid") and meta["uid"] != cur_meta["uid"]:
            why = f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {cur_meta['uid']}"
            raise kind.conflict(name, why)
        if meta.get("resourceVersion") and meta["resourceVersion"] != cur_meta["resourceVersion"]:
            raise kind.conflict(name, MODIFIED)
        for field in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "generation"):
            if field in cur_meta:
                meta[field] = cur_meta[field]
            else:
                meta.pop(field, None)
        meta["labels"] = meta.get("labels") or {}
        meta["annotations"] = meta.get("annotations") or {}
        if "status" in current:  # status is a subresource: the main resource cannot write it
            new["status"] = copy.deepcopy(current["status"])
        else:
            new.pop("status", None)
        if kind is DEPLOYMENTS:
            _validate_deployment(name, new, current)
        elif kind is PODS:
            _validate_pod(name, new, current)
        if kind in _GENERATION_KINDS and _canon(new.get("spec")) != _canon(current.get("spec")):
            meta["generation"] = cur_meta.get("generation", 0) + 1
        return self._commit(kind, (ns or "", name), current, new, dry_run, lambda obj: self._out(kind, obj))

    def _update_scale(
        self, ns: str, name: str, method: str, query: dict[str, str], ctype: str, raw: bytes
    ) -> tuple[int, Obj]:
        dry_run = _dry_run(query)
        current = self._get(DEPLOYMENTS, ns, name)
        scale = _patched(_scale_of(current), method, ctype, raw)
        meta = scale.get("metadata") if isinstance(scale.get("metadata"), dict) else {}
        if meta.get("name", name) != name:
            raise ApiError(
                400, f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if meta.get("resourceVersion") and meta["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise DEPLOYMENTS.conflict(name, MODIFIED)
        replicas = (scale.get("spec") or {}).get("replicas", 0)  # omitempty: no replicas means 0
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            raise SCALE.invalid(name, "spec.replicas", replicas, "must be an integer")
        if replicas < 0:
            raise SCALE.invalid(name, "spec.replicas", replicas, "must be greater than or equal to 0")
        new = copy.deepcopy(current)
        if new["spec"].get("replicas") != replicas:
            new["spec"]["replicas"] = replicas
            new["metadata"]["generation"] += 1
        return self._commit(DEPLOYMENTS, (ns, name), current, new, dry_run, _scale_of)

    def _commit(
        self,
        kind: _Kind,
        key: tuple[str, str],
        current: Obj,
        new: Obj,
        dry_run: bool,
        view: Callable[[Obj], Obj],
    ) -> tuple[int, Obj]:
        # etcd skips a write that changes nothing: no new resourceVersion, no event.
        if _canon(new) == _canon(current):
            return 200, view(current)
        if dry_run:
            return 200, view(new)
        self._stamp(new)
        self._objects[kind.plural][key] = new
        answer = view(new)  # as written, before the controller reacts
        if kind is DEPLOYMENTS:
            self._reconcile(key)
        return 200, answer

    def _delete_pod(self, ns: str, name: str, query: dict[str, str], raw: bytes) -> tuple[int, Obj]:
        options = _decode(raw) if raw.strip() else {}
        if not isinstance(options, dict):
            raise ApiError(400, "the body of a delete must be DeleteOptions")
        dry_run = _dry_run(query, options.get("dryRun"))
        pod = self._get(PODS, ns, name)
        _check_preconditions(PODS, pod, options.get("preconditions"))
        answer = self._out(PODS, pod)
        if not dry_run:
            self._remove_pod(ns, name)
            answer["metadata"]["resourceVersion"] = str(self._rv)
        answer["metadata"]["deletionTimestamp"] = _timestamp(None)
        answer["metadata"]["deletionGracePeriodSeconds"] = options.get("gracePeriodSeconds", 30)
        return 200, answer

    def _evict(self, ns: str, name: str, query: dict[str, str], raw: bytes) -> tuple[int, Obj]:
        eviction = _decode(raw)
        if not isinstance(eviction, dict):
            raise ApiError(400, "the body of an eviction must be an Eviction object")
        meta = eviction.get("metadata") or {}
        if meta.get("name", name) != name:
            raise ApiError(400, "name in URL does not match name in Eviction object")
        if meta.get("namespace", ns) != ns:
            raise ApiError(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        options = eviction.get("deleteOptions") or {}
        dry_run = _dry_run(query, options.get("dryRun"))
        pod = self._get(PODS, ns, name)
        _check_preconditions(PODS, pod, options.get("preconditions"))
        if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):  # finished pods go freely
            self._check_budget(ns, pod)
        if not dry_run:
            self._remove_pod(ns, name)
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _check_budget(self, ns: str, pod: Obj) -> None:
        labels = pod["metadata"].get("labels") or {}
        budgets = [
            pdb
            for (pdb_ns, _), pdb in sorted(self._objects["poddisruptionbudgets"].items())
            if pdb_ns == ns and _matches(_selector_requirements(pdb["spec"].get("selector")), labels)
        ]
        if len(budgets) > 1:
            raise ApiError(
                500,
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            )
        if not budgets:
            return
        pdb, status = budgets[0], self._pdb_status(budgets[0])
        # The default unhealthyPodEvictionPolicy (IfHealthyBudget): a pod that is not ready
        # may go while the budget is met, since it adds nothing to it.
        if not _ready(pod) and status["currentHealthy"] >= status["desiredHealthy"]:
            return
        if status["disruptionsAllowed"] < 1:
            cause = (
                f"The disruption budget {pdb['metadata']['name']} needs {status['desiredHealthy']} "
                f"healthy pods and has {status['currentHealthy']} currently"
            )
            raise ApiError(
                429,
                EVICTION_BLOCKED,
                details={"causes": [{"reason": "DisruptionBudget", "message": cause}]},
            )

    def _pdb_status(self, pdb: Obj) -> Obj:
        ns, spec = pdb["metadata"]["namespace"], pdb["spec"]
        selector = _selector_requirements(spec.get("selector"))
        pods = [
            pod
            for (pod_ns, _), pod in self._objects["pods"].items()
            if pod_ns == ns and _matches(selector, pod["metadata"].get("labels") or {})
        ]
        healthy = sum(1 for pod in pods if _ready(pod))
        if spec.get("maxUnavailable") is not None:
            expected = self._expected_pods(pods)
            desired = max(0, expected - int(spec["maxUnavailable"]))
        else:  # an integer minAvailable counts the pods that exist, as the real controller does
            expected, desired = len(pods), int(spec.get("minAvailable") or 0)
        allowed = max(0, healthy - desired)
        return {
            "observedGeneration": pdb["metadata"].get("generation", 1),
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": [
                {
                    "type": "DisruptionAllowed",
                    "status": "True" if allowed else "False",
                    "reason": "SufficientPods" if allowed else "InsufficientPods",
                    "message": "",
                    "observedGeneration": pdb["metadata"].get("generation", 1),
                    "lastTransitionTime": pdb["metadata"]["creationTimestamp"],
                }
            ],
        }

    def _expected_pods(self, pods: list[Obj]) -> int:
        """The disruption controller's count for maxUnavailable: the scale of the pods'
        controllers, not the pods that exist, so evicted pods nobody recreated (there is
        no ReplicaSet controller here) still count as missing. Pods of controllers this
        fake does not model (DaemonSets, bare pods) count as they are."""
        scales: dict[str, int] = {}
        unmodelled = 0
        for pod in pods:
            ns = pod["metadata"]["namespace"]
            ref = next((r for r in pod["metadata"].get("ownerReferences", []) if r.get("controller")), None)
            rs = (
                self._objects["replicasets"].get((ns, ref["name"]))
                if ref and ref["kind"] == "ReplicaSet"
                else None
            )
            if rs is None:
                unmodelled += 1
                continue
            rs_ref = next(
                (r for r in rs["metadata"]["ownerReferences"] if r.get("kind") == "Deployment"), None
            )
            deployment = self._objects["deployments"].get((ns, rs_ref["name"])) if rs_ref else None
            if deployment is not None:
                scales[deployment["metadata"]["uid"]] = deployment["spec"].get("replicas", 1)
            else:
                scales[rs["metadata"]["uid"]] = rs["spec"]["replicas"]
        return sum(scales.values()) + unmodelled

    def _remove_pod(self, ns: str, name: str) -> None:
        del self._objects["pods"][(ns, name)]
        self._rv += 1  # a deletion is a write too

    # -- the deployment controller --------------------------------------------

    def _reconcile(self, key: tuple[str, str], at: datetime | None = None) -> None:
        deployment = self._objects["deployments"][key]
        before = copy.deepcopy(deployment)
        spec, meta = deployment["spec"], deployment["metadata"]
        owned = [
            rs
            for rs in self._objects["replicasets"].values()
            if any(
                ref.get("uid") == meta["uid"] and ref.get("controller")
                for ref in rs["metadata"]["ownerReferences"]
            )
        ]
        top = max((_revision(rs) for rs in owned), default=0)
        current = next((rs for rs in owned if _revision(rs) == top), None)
        template = _canon(_without_hash(spec["template"]))
        matching = next(
            (rs for rs in owned if _canon(_without_hash(rs["spec"]["template"])) == template), None
        )
        if not spec.get("paused"):  # a paused deployment scales but does not roll out
            if matching is None:
                matching = self._new_replicaset(deployment, top + 1, at)
                owned.append(matching)
            elif matching is not current:
                # As the real controller on a rollback: the old ReplicaSet takes a new,
                # higher revision and remembers its old number.
                annotations = matching["metadata"]["annotations"]
                history = [r for r in annotations.get(REVISION_HISTORY, "").split(",") if r]
                annotations[REVISION_HISTORY] = ",".join([*history, annotations[REVISION]])
                annotations[REVISION] = str(top + 1)
            current = matching
        want = spec.get("replicas", 1)
        healthy = self._healthy.get(key, True)
        for rs in owned:
            rs_before = copy.deepcopy(rs)
            replicas = want if rs is current else 0
            if rs["spec"]["replicas"] != replicas:
                rs["spec"]["replicas"] = replicas
                rs["metadata"]["generation"] += 1
            if rs is current:
                rs["metadata"]["annotations"][DESIRED_REPLICAS] = str(want)
            ready = replicas if healthy else 0
            rs["status"] = _omit_zeros(
                {
                    "replicas": replicas,
                    "fullyLabeledReplicas": replicas,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "observedGeneration": rs["metadata"]["generation"],
                },
                keep=("replicas",),
            )
            if _canon(rs) != _canon(rs_before):
                self._stamp(rs)
        if current is not None:
            meta["annotations"][REVISION] = current["metadata"]["annotations"][REVISION]
        deployment["status"] = self._deployment_status(deployment, current, current is matching, healthy)
        if _canon(deployment) != _canon(before):
            self._stamp(deployment)

    def _deployment_status(
        self, deployment: Obj, current: Obj | None, up_to_date: bool, healthy: bool
    ) -> Obj:
        spec, old = deployment["spec"], deployment.get("status") or {}
        replicas = spec.get("replicas", 1) if current is not None else 0
        available = replicas if healthy else 0
        rs_name = current["metadata"]["name"] if current is not None else deployment["metadata"]["name"]
        if healthy:
            available_cond = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            available_cond = (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        if spec.get("paused"):
            progressing = ("Unknown", "DeploymentPaused", "Deployment is paused")
        elif healthy:
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        else:
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        previous = {c["type"]: c for c in old.get("conditions", [])}
        conditions = []
        for type_, (status, reason, message) in (("Available", available_cond), ("Progressing", progressing)):
            prior = previous.get(type_, {})
            now = _timestamp(None)
            same = prior.get("status") == status and prior.get("reason") == reason
            conditions.append(
                {
                    "type": type_,
                    "status": status,
                    "lastUpdateTime": prior["lastUpdateTime"] if same else now,
                    "lastTransitionTime": prior["lastTransitionTime"]
                    if prior.get("status") == status
                    else now,
                    "reason": reason,
                    "message": message,
                }
            )
        counts = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas if up_to_date else 0,
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": replicas - available,
        }
        return {**_omit_zeros(counts), "conditions": conditions}  # the API omits zero counts

    def _new_replicaset(self, deployment: Obj, revision: int, at: datetime | None) -> Obj:
        meta, spec = deployment["metadata"], deployment["spec"]
        template = _without_hash(spec["template"])
        pod_hash = hashlib.sha256(_canon(template).encode()).hexdigest()[:10]
        template.setdefault("metadata", {}).setdefault("labels", {})[TEMPLATE_HASH] = pod_hash
        rs_meta = self._new_meta(
            meta["namespace"], f"{meta['name']}-{pod_hash}", template["metadata"]["labels"], at
        )
        rs_meta["generation"] = 1
        rs_meta["annotations"] = {REVISION: str(revision), DESIRED_REPLICAS: str(spec.get("replicas", 1))}
        rs_meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        selector = copy.deepcopy(spec["selector"])
        selector.setdefault("matchLabels", {})[TEMPLATE_HASH] = pod_hash
        rs = {
            "metadata": rs_meta,
            "spec": {"replicas": 0, "selector": selector, "template": template},
            "status": {"replicas": 0},
        }
        self._objects["replicasets"][(meta["namespace"], rs_meta["name"])] = rs
        return rs

    # -- bookkeeping ----------------------------------------------------------

    def _stamp(self, obj: Obj) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def _new_meta(
        self, namespace: str | None, name: str, labels: dict[str, str], created_at: datetime | None = None
    ) -> Obj:
        self._rv += 1
        meta: Obj = {"name": name}
        if namespace is not None:
            meta["namespace"] = namespace
        meta |= {
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(self._rv),
            "creationTimestamp": _timestamp(created_at),
            "labels": dict(labels),
            "annotations": {},
        }
        return meta


def _handler_for(fake: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, body = fake.serve(
                self.command,
                self.path,
                self.headers.get("content-type", ""),
                raw,
                self.headers.get("authorization", ""),
            )
            plain = isinstance(body, PlainText)
            data = body.text.encode() if isinstance(body, PlainText) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "text/plain" if plain else "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)
            fake.notify_waiters()

        do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


# -- request bodies and dry runs ------------------------------------------------


def _loads(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None


def _is_dry_run(query: dict[str, str], body: Any) -> bool:
    if "dryRun" in query:
        return True
    if isinstance(body, dict):
        options = body.get("deleteOptions") if isinstance(body.get("deleteOptions"), dict) else body
        return bool(options.get("dryRun"))
    return False


def _dry_run(query: dict[str, str], in_body: Any = None) -> bool:
    values = [query["dryRun"]] if "dryRun" in query else []
    if in_body is not None:
        values += in_body if isinstance(in_body, list) else [in_body]
    for value in values:
        if value != "All":
            raise ApiError(400, f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return bool(values)


def _check_preconditions(kind: _Kind, obj: Obj, preconditions: Any) -> None:
    if not preconditions:
        return
    if not isinstance(preconditions, dict):
        raise ApiError(400, "preconditions must be an object")
    meta, name = obj["metadata"], obj["metadata"]["name"]
    uid, rv = preconditions.get("uid"), preconditions.get("resourceVersion")
    if uid and uid != meta["uid"]:
        raise kind.conflict(
            name, f"Precondition failed: UID in precondition: {uid}, UID in object meta: {meta['uid']}"
        )
    if rv and rv != meta["resourceVersion"]:
        why = f"Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {meta['resourceVersion']}"
        raise kind.conflict(name, why)


def _method_not_allowed() -> ApiError:
    return ApiError(405, "the server does not allow this method on the requested resource")


# -- patches --------------------------------------------------------------------


def _patched(current: Obj, method: str, content_type: str, raw: bytes) -> Obj:
    ctype = content_type.split(";")[0].strip().lower()
    if method == "PUT":
        if ctype not in ("", "application/json"):
            raise _unsupported_media(ctype)
        result = _decode(raw)
    elif ctype == JSON_PATCH:
        result = _json_patch(current, _decode(raw))
    elif ctype in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        patch = _decode(raw)
        if not isinstance(patch, dict):
            raise ApiError(400, "a merge patch must be a JSON object")
        result = _merge_patch(current, patch) if ctype == MERGE_PATCH else _strategic_merge(current, patch)
    else:
        raise _unsupported_media(ctype)
    if not isinstance(result, dict):
        raise ApiError(422, "the patched object is not a JSON object")
    return result


def _unsupported_media(ctype: str) -> ApiError:
    return ApiError(
        415,
        f"the body of the request was in an unknown format ({ctype!r}) - accepted media types include: "
        f"{JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}",
    )


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


# The lists a strategic merge patch merges element by element, by this key; every
# other list is replaced, as in a merge patch.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
}


def _strategic_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):  # $setElementOrder/..., $retainKeys: ordering hints
            continue
        if value is None:
            result.pop(key, None)
        elif key in _MERGE_KEYS and isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, _MERGE_KEYS[key])
        else:
            result[key] = _strategic_merge(result.get(key), value)
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    if not all(isinstance(item, dict) and key in item for item in patch):
        return copy.deepcopy(patch)
    out = copy.deepcopy(current)
    for item in patch:
        at = next(
            (i for i, old in enumerate(out) if isinstance(old, dict) and old.get(key) == item[key]), None
        )
        if item.get("$patch") == "delete":
            if at is not None:
                del out[at]
        elif at is None:
            out.append(_strategic_merge({}, item))
        else:
            out[at] = _strategic_merge(out[at], item)
    return out


def _json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902. A malformed patch is a 400; one that does not apply (a failed ``test``,
    a missing path) is a 422, as from the API server."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise ApiError(400, "json: cannot unmarshal into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in ops:
        doc = _apply_op(doc, op)
    return doc


def _apply_op(doc: Any, op: Obj) -> Any:
    kind, path = op.get("op"), op.get("path")
    tokens = _pointer(path)
    if kind in ("add", "replace", "test") and "value" not in op:
        raise _patch_failed(f"{kind} operation on {path} has no value")
    if kind == "test":
        if not _same(_walk(doc, tokens, path), op["value"]):
            raise _patch_failed(f"testing value {path} failed: test failed")
        return doc
    if kind == "add":
        return _add(doc, tokens, copy.deepcopy(op["value"]), path)
    if kind == "remove":
        return _remove(doc, tokens, path)
    if kind == "replace":
        return _replace(doc, tokens, copy.deepcopy(op["value"]), path)
    if kind in ("move", "copy"):
        source = op.get("from")
        value = copy.deepcopy(_walk(doc, _pointer(source), source))
        if kind == "move":
            doc = _remove(doc, _pointer(source), source)
        return _add(doc, tokens, value, path)
    raise _patch_failed(f"Unexpected kind: {kind}")


def _patch_failed(message: str) -> ApiError:
    return ApiError(422, message)


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _patch_failed(f"invalid JSON pointer: {path!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path.split("/")[1:]]


def _index(token: str, bound: int) -> int | None:
    if not token.isdigit() or (token != "0" and token.startswith("0")) or int(token) >= bound:
        return None
    return int(token)


def _walk(doc: Any, tokens: list[str], path: Any) -> Any:
    node = doc
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and _index(token, len(node)) is not None:
            node = node[int(token)]
        else:
            raise _patch_failed(f"doc is missing path: {path}: missing value")
    return node


def _add(doc: Any, tokens: list[str], value: Any, path: Any) -> Any:
    if not tokens:
        return value
    parent, last = _walk(doc, tokens[:-1], path), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list) and last == "-":
        parent.append(value)
    elif isinstance(parent, list) and (at := _index(last, len(parent) + 1)) is not None:
        parent.insert(at, value)
    else:
        raise _patch_failed(f"add operation does not apply: doc is missing path: {path}")
    return doc


def _replace(doc: Any, tokens: list[str], value: Any, path: Any) -> Any:
    if not tokens:
        return value
    parent, last = _walk(doc, tokens[:-1], path), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        parent[last] = value
    elif isinstance(parent, list) and (at := _index(last, len(parent))) is not None:
        parent[at] = value
    else:  # unlike add, replace needs the path to exist
        raise _patch_failed(f"replace operation does not apply: doc is missing key: {path}: missing value")
    return doc


def _remove(doc: Any, tokens: list[str], path: Any) -> Any:
    if not tokens:
        raise _patch_failed("remove operation does not apply to the whole document")
    parent, last = _walk(doc, tokens[:-1], path), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and (at := _index(last, len(parent))) is not None:
        del parent[at]
    else:
        raise _patch_failed(f"remove operation does not apply: doc is missing path: {path}")
    return doc


def _same(a: Any, b: Any) -> bool:
    """JSON equality: unlike ``==``, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if _number(a) and _number(b):
        return bool(a == b)  # JSON has one number type: 1 and 1.0 are the same
    return type(a) is type(b) and a == b


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- validation -------------------------------------------------------------------


def _validate_deployment(name: str, new: Obj, current: Obj) -> None:
    spec = new.get("spec")
    if not isinstance(spec, dict):
        raise DEPLOYMENTS.invalid(name, "spec", required=True)
    replicas = spec.setdefault("replicas", 1)  # the API server's default
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise DEPLOYMENTS.invalid(name, "spec.replicas", replicas, "must be an integer")
    if replicas < 0:
        raise DEPLOYMENTS.invalid(name, "spec.replicas", replicas, "must be greater than or equal to 0")
    if "paused" in spec and not isinstance(spec["paused"], bool):
        raise DEPLOYMENTS.invalid(name, "spec.paused", spec["paused"], "must be a boolean")
    if _canon(spec.get("selector")) != _canon(current["spec"].get("selector")):
        raise DEPLOYMENTS.invalid(name, "spec.selector", spec.get("selector"), "field is immutable")
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not _matches(_selector_requirements(spec.get("selector")), labels):
        raise DEPLOYMENTS.invalid(
            name, "spec.template.metadata.labels", labels, "`selector` does not match template `labels`"
        )
    containers = (template.get("spec") or {}).get("containers")
    if not isinstance(containers, list) or not containers:
        raise DEPLOYMENTS.invalid(name, "spec.template.spec.containers", required=True)
    for i, container in enumerate(containers):
        for field in ("name", "image"):
            if not isinstance(container, dict) or not container.get(field):
                raise DEPLOYMENTS.invalid(name, f"spec.template.spec.containers[{i}].{field}", required=True)


def _validate_pod(name: str, new: Obj, current: Obj) -> None:
    def _sans_images(spec: Any) -> str:
        spec = copy.deepcopy(spec) if isinstance(spec, dict) else {}
        for container in spec.get("containers") or []:
            if isinstance(container, dict):
                container.pop("image", None)
        return _canon(spec)

    if _sans_images(new.get("spec")) != _sans_images(current.get("spec")):
        raise ApiError(
            422,
            f'Pod "{name}" is invalid: spec: Forbidden: pod updates may not change fields other than '
            "`spec.containers[*].image`",
            details={
                "name": name,
                "kind": "Pod",
                "causes": [{"reason": "FieldValueForbidden", "field": "spec"}],
            },
        )


# -- selectors ----------------------------------------------------------------------

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_TERM_SET = re.compile(rf"\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)\s*")
_TERM_EQ = re.compile(rf"\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*")
_TERM_EXISTS = re.compile(rf"\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*")

Requirement = tuple[
    str, str, frozenset[str]
]  # (key, "=", "!=", "in", "notin", "exists" or "!exists", values)


def _split_terms(text: str) -> list[str]:
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _parse_label_selector(text: str) -> list[Requirement]:
    if not text.strip():
        return []
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        if m := _TERM_SET.fullmatch(term):
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            requirements.append((m["key"], m["op"], values))
        elif m := _TERM_EQ.fullmatch(term):
            requirements.append((m["key"], "!=" if m["op"] == "!=" else "=", frozenset({m["value"]})))
        elif m := _TERM_EXISTS.fullmatch(term):
            requirements.append((m["key"], "!exists" if m["neg"] else "exists", frozenset()))
        else:
            raise ApiError(400, f"unable to parse requirement: {term.strip()!r}")
    return requirements


def _selector_requirements(selector: Any) -> list[Requirement]:
    """A LabelSelector object's requirements; a missing selector matches nothing."""
    if not isinstance(selector, dict):
        return [("", "in", frozenset())]
    requirements: list[Requirement] = [
        (k, "=", frozenset({str(v)})) for k, v in (selector.get("matchLabels") or {}).items()
    ]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        requirements.append((expr["key"], ops[expr["operator"]], frozenset(expr.get("values") or [])))
    return requirements


def _matches(requirements: list[Requirement], labels: dict[str, str]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        if op in ("=", "in") and not (present and labels[key] in values):
            return False
        if op in ("!=", "notin") and present and labels[key] in values:
            return False
        if (op == "exists" and not present) or (op == "!exists" and present):
            return False
    return True


def _format_selector(selector: Obj) -> str:
    """``metav1.FormatLabelSelector``, as in a Scale's ``status.selector``."""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, values = expr["operator"], ",".join(sorted(expr.get("values") or []))
        terms.append(
            {"In": f"{expr['key']} in ({values})", "NotIn": f"{expr['key']} notin ({values})"}.get(
                op, expr["key"] if op == "Exists" else f"!{expr['key']}"
            )
        )
    return ",".join(terms)


_FIELDS: dict[str, Callable[[Obj], str]] = {
    "metadata.name": lambda obj: obj["metadata"]["name"],
    "metadata.namespace": lambda obj: obj["metadata"].get("namespace", ""),
}
_POD_FIELDS: dict[str, Callable[[Obj], str]] = {
    **_FIELDS,
    "spec.nodeName": lambda pod: pod["spec"].get("nodeName", ""),
    "status.phase": lambda pod: pod.get("status", {}).get("phase", ""),
}


def _parse_field_selector(kind: _Kind, text: str) -> list[tuple[str, str, str]]:
    if not text.strip():
        return []
    known = _POD_FIELDS if kind is PODS else _FIELDS
    terms = []
    for term in text.split(","):
        m = re.fullmatch(r"\s*(?P<field>[A-Za-z.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*", term)
        if m is None:
            raise ApiError(400, f"invalid selector: {term.strip()!r}; can't understand it")
        if m["field"] not in known:
            raise ApiError(
                400, f'"{m["field"]}" is not a known field selector: only {", ".join(map(repr, known))}'
            )
        terms.append((m["field"], "!=" if m["op"] == "!=" else "=", m["value"]))
    return terms


def _matches_field(kind: _Kind, obj: Obj, field: str, op: str, value: str) -> bool:
    actual = (_POD_FIELDS if kind is PODS else _FIELDS)[field](obj)
    return (actual == value) == (op == "=")


# -- small things ---------------------------------------------------------------------


def _scale_of(deployment: Obj) -> Obj:
    meta, spec = deployment["metadata"], deployment["spec"]
    replicas = spec.get("replicas", 1)
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        },
        "spec": {"replicas": replicas} if replicas else {},  # omitempty
        "status": {
            "replicas": (deployment.get("status") or {}).get("replicas", 0),
            "selector": _format_selector(spec["selector"]),
        },
    }


def _revision(obj: Obj) -> int:
    raw = obj["metadata"].get("annotations", {}).get(REVISION, "0")
    return int(raw) if str(raw).isdigit() else 0


def _without_hash(template: Obj) -> Obj:
    template = copy.deepcopy(template)
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(TEMPLATE_HASH, None)
    return template


def _ready(pod: Obj) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _omit_zeros(counts: Obj, keep: tuple[str, ...] = ()) -> Obj:
    return {k: v for k, v in counts.items() if v or k in keep}


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _timestamp(at: datetime | None) -> str:
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
