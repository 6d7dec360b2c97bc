"""Rendering the kustomize overlays and reading the objects they produce.

Also a small NetworkPolicy evaluator: enough of the Kubernetes semantics
(pod and namespace selectors, ports, policy types) to ask whether one pod of
the namespace may open a TCP connection to another pod on a port.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from meshtest import REPO_ROOT

K8S_DIR = REPO_ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
SERVER_COMPONENTS = ("gateway", "agent")

Object = dict[str, Any]


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(path: Path) -> list[Object]:
    """``kubectl kustomize PATH``, parsed; raises with kubectl's message on failure."""
    binary = kubectl()
    assert binary is not None
    result = subprocess.run(
        [binary, "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass(frozen=True)
class Rendered:
    """The objects of one rendered kustomization, with lookups by kind and name."""

    name: str
    objects: list[Object]

    def of_kind(self, kind: str) -> list[Object]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Object:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        raise AssertionError(f"{self.name}: no {kind} named {name!r}")

    def find(self, kind: str, name: str) -> Object | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)

    def servers(self) -> list[Object]:
        """The gateway's and the agents' Deployments."""
        return [d for d in self.of_kind("Deployment") if component(d) in SERVER_COMPONENTS]

    def agents(self) -> dict[str, Object]:
        return {
            d["metadata"]["name"]: d for d in self.of_kind("Deployment") if component(d) == "agent"
        }

    def configmap(self, generated_name: str) -> Object:
        """A ConfigMap made by configMapGenerator (its name carries a hash suffix)."""
        found = [
            c
            for c in self.of_kind("ConfigMap")
            if c["metadata"]["name"].rsplit("-", 1)[0] == generated_name
        ]
        assert len(found) == 1, f"{self.name}: expected one ConfigMap {generated_name}-<hash>"
        return found[0]


def component(obj: Object) -> str | None:
    labels: dict[str, str] = obj["metadata"].get("labels", {})
    return labels.get("app.kubernetes.io/component")


def pod_spec(deployment: Object) -> Object:
    spec: Object = deployment["spec"]["template"]["spec"]
    return spec


def pod_labels(deployment: Object) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(deployment: Object) -> list[Object]:
    found: list[Object] = pod_spec(deployment)["containers"]
    return found


def the_container(deployment: Object) -> Object:
    (container,) = containers(deployment)
    return container


def env_values(container: Object) -> dict[str, str]:
    """Literal environment values (variables set from fields or secrets are left out)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def env_names(container: Object) -> list[str]:
    return [e["name"] for e in container.get("env", [])]


def container_port(container: Object, name: str) -> int:
    for port in container.get("ports", []):
        if port["name"] == name:
            return int(port["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {name!r}")


def mounted_volume(deployment: Object, path: str) -> Object:
    """The volume whose mount in the container holds ``path`` (deepest mount wins)."""
    mounts = sorted(
        (
            m
            for m in the_container(deployment).get("volumeMounts", [])
            if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
        ),
        key=lambda m: len(m["mountPath"]),
    )
    assert mounts, f"{deployment['metadata']['name']}: nothing is mounted at {path}"
    volume_name = mounts[-1]["name"]
    for volume in pod_spec(deployment).get("volumes", []):
        if volume["name"] == volume_name:
            found: Object = volume
            return found
    raise AssertionError(f"volume {volume_name} is mounted but not declared")


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


NAMESPACE = "agentmesh"


@dataclass(frozen=True)
class Pod:
    """A pod for the policy evaluator: its labels and its namespace."""

    labels: Mapping[str, str]
    namespace: str = NAMESPACE


def _policies(rendered: Rendered, pod: Pod, direction: str) -> Iterator[Object]:
    """The policies of the overlay's namespace that select ``pod`` for ``direction``."""
    if pod.namespace != NAMESPACE:
        return
    for policy in rendered.of_kind("NetworkPolicy"):
        spec = policy["spec"]
        types = spec.get("policyTypes") or ["Ingress"]
        if direction in types and selector_matches(spec["podSelector"], pod.labels):
            yield spec


def _peer_matches(peer: Object, other: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # addresses outside the cluster, not pods
    if "namespaceSelector" in peer:
        # Namespaces carry their name as the label kubernetes.io/metadata.name.
        namespace_labels = {"kubernetes.io/metadata.name": other.namespace}
        namespace_ok = selector_matches(peer["namespaceSelector"], namespace_labels)
    else:
        namespace_ok = other.namespace == NAMESPACE  # a bare podSelector: this namespace
    pod_ok = selector_matches(peer.get("podSelector") or {}, other.labels)
    return namespace_ok and pod_ok


def _peers_allow(peers: list[Object] | None, other: Pod) -> bool:
    return not peers or any(_peer_matches(peer, other) for peer in peers)


def _port_allows(ports: list[Object] | None, port: int) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == "TCP" and int(p["port"]) == port for p in ports)


def _direction_allows(
    rendered: Rendered, direction: str, selected: Pod, other: Pod, port: int
) -> bool:
    specs = list(_policies(rendered, selected, direction))
    if not specs:
        return True  # no policy isolates this pod in this direction
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(
        _peers_allow(rule.get(peers_key), other) and _port_allows(rule.get("ports"), port)
        for spec in specs
        for rule in spec.get(rules_key) or []
    )


def ingress_allowed(rendered: Rendered, source: Pod, target: Pod, port: int) -> bool:
    """Do ``target``'s ingress policies admit ``source`` on ``port`` (egress aside)?"""
    return _direction_allows(rendered, "Ingress", target, source, port)


def connection_allowed(rendered: Rendered, source: Pod, target: Pod, port: int) -> bool:
    """May ``source`` open TCP ``port`` on ``target``: its egress and the target's ingress?"""
    return _direction_allows(rendered, "Egress", source, target, port) and ingress_allowed(
        rendered, source, target, port
    )
