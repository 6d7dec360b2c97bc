"""The Kubernetes manifests agree with the code: every service is deployed, and
ports, probes, settings, configuration and policies line up.

Each overlay is rendered once with ``kubectl kustomize`` (offline). Schema
validation and checkov run in deploy/check.sh.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from deploy.manifests import (
    K8S_DIR,
    OVERLAYS,
    Object,
    Pod,
    Rendered,
    component,
    connection_allowed,
    container_port,
    containers,
    env_names,
    env_values,
    ingress_allowed,
    kubectl,
    mounted_volume,
    pod_labels,
    pod_spec,
    render,
    selector_matches,
    the_container,
)
from meshtest import REPO_ROOT

from agentmesh.agents import REFERENCE_AGENTS
from agentmesh.agents.memory.store import MemorySettings
from agentmesh.cli.runner import GATEWAY_MODULE
from agentmesh.gateway.config import GatewaySettings, load_config
from agentmesh.runtime.settings import ServerSettings

pytestmark = pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed")

AGENTS_PACKAGE = REPO_ROOT / "services" / "agentmesh" / "agents"
EXAMPLES = REPO_ROOT / "examples"
DOCS = REPO_ROOT / "docs" / "deploy.md"
# dns:///NAME:PORT, or the long form dns:///NAME.NAMESPACE.svc.cluster.local:PORT.
DNS_ADDRESS = re.compile(
    r"^dns:///(?P<host>[a-z0-9-]+)"
    r"(?:\.(?P<ns>[a-z0-9-]+)\.svc(?:\.cluster\.local)?)?"
    r":(?P<port>\d+)$"
)


@pytest.fixture(scope="module")
def overlays() -> dict[str, Rendered]:
    return {name: Rendered(name, render(K8S_DIR / "overlays" / name)) for name in OVERLAYS}


@pytest.fixture(scope="module")
def base() -> Rendered:
    return Rendered("base", render(K8S_DIR / "base"))


def _each(overlays: dict[str, Rendered]) -> list[Rendered]:
    return [overlays[name] for name in OVERLAYS]


def _settings_env(container: Object) -> dict[str, str]:
    """The container's literal AGENTMESH_* values, as settings field names."""
    return {
        name.removeprefix("AGENTMESH_").lower(): value
        for name, value in env_values(container).items()
        if name.startswith("AGENTMESH_")
    }


def _settings(deployment: Object) -> ServerSettings:
    """The settings the service would start with, read by the service's own settings class."""
    cls = GatewaySettings if component(deployment) == "gateway" else ServerSettings
    values = {
        k: v for k, v in _settings_env(the_container(deployment)).items() if k in cls.model_fields
    }
    return cls.model_validate(values)


def _service_selecting(rendered: Rendered, deployment: Object) -> Object:
    found = [
        s
        for s in rendered.of_kind("Service")
        if s["spec"].get("selector")
        and selector_matches({"matchLabels": s["spec"]["selector"]}, pod_labels(deployment))
    ]
    assert len(found) == 1, f"{rendered.name}: {deployment['metadata']['name']} needs one Service"
    return found[0]


# -- every service is deployed -------------------------------------------------


def test_every_agent_package_is_a_reference_agent() -> None:
    """A runnable agent under services/ that REFERENCE_AGENTS misses would never be deployed."""
    runnable = {f"agentmesh.agents.{p.parent.name}" for p in AGENTS_PACKAGE.glob("*/__main__.py")}
    assert runnable == set(REFERENCE_AGENTS.values())


def test_every_reference_agent_has_a_deployment_and_a_headless_service(
    overlays: dict[str, Rendered],
) -> None:
    for rendered in _each(overlays):
        agents = rendered.agents()
        assert set(agents) == set(REFERENCE_AGENTS), rendered.name
        for name, module in REFERENCE_AGENTS.items():
            deployment = agents[name]
            assert the_container(deployment)["command"] == ["python", "-m", module]
            assert pod_labels(deployment)["app.kubernetes.io/name"] == name
            service = _service_selecting(rendered, deployment)
            assert service["metadata"]["name"] == name
            assert service["spec"]["clusterIP"] == "None", f"{name}: the Service must be headless"


def test_the_gateway_has_a_deployment_and_a_service(overlays: dict[str, Rendered]) -> None:
    for rendered in _each(overlays):
        deployment = rendered.get("Deployment", "gateway")
        assert component(deployment) == "gateway"
        assert the_container(deployment)["command"] == ["python", "-m", GATEWAY_MODULE]
        service = _service_selecting(rendered, deployment)
        assert service["metadata"]["name"] == "gateway"
        assert service["spec"].get("clusterIP") != "None"
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_every_server_runs_the_one_image(overlays: dict[str, Rendered]) -> None:
    for rendered in _each(overlays):
        images = {the_container(d)["image"] for d in rendered.servers()}
        assert len(images) == 1, images
        (image,) = images
        assert re.fullmatch(r"[^:@]+(:[\w][\w.-]*)?(@sha256:[0-9a-f]{64})?", image), image
        assert not image.endswith(":latest"), image
        assert ":" in image or "@" in image, f"{image}: pin a version"


# -- ports, probes and settings --------------------------------------------------


def test_ports_and_probes_match_the_settings(overlays: dict[str, Rendered]) -> None:
    for rendered in _each(overlays):
        for deployment in rendered.servers():
            name = deployment["metadata"]["name"]
            container = the_container(deployment)
            settings = _settings(deployment)
            assert settings.host == "0.0.0.0", f"{name}: must listen on every interface"
            grpc_port = container_port(container, "grpc")
            assert settings.port == grpc_port, name

            # Probes ask grpc.health.v1 for the whole server (service ""),
            # on the plaintext health port when TLS moved health there.
            health_port = int(_settings_env(container).get("health_port", grpc_port))
            if health_port != grpc_port:
                assert container_port(container, "health") == health_port, name
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                check = container[probe]["grpc"]
                assert check["port"] == health_port, f"{name}: {probe} port"
                assert check.get("service", "") == "", f"{name}: {probe} service"

            # The Service reaches the gRPC port by its name (and, with the
            # monitoring component, the metrics port for the ServiceMonitor).
            service = _service_selecting(rendered, deployment)
            ports = {p["name"]: p for p in service["spec"]["ports"]}
            assert set(ports) <= {"grpc", "metrics"}, name
            assert ports["grpc"]["targetPort"] == "grpc"
            assert ports["grpc"]["port"] == grpc_port, name


def test_termination_grace_outlasts_the_drain(overlays: dict[str, Rendered]) -> None:
    for rendered in _each(overlays):
        for deployment in rendered.servers():
            settings = _settings(deployment)
            assert settings.drain_delay > 0, "a drain delay lets endpoints drop the pod first"
            drain = settings.drain_delay + settings.grace_period
            grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
            assert grace > drain, f"{deployment['metadata']['name']}: {grace} s <= drain {drain} s"
            # Liveness must not kill a pod that is NOT_SERVING because it drains.
            liveness = the_container(deployment)["livenessProbe"]
            assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain


def test_metrics_port_and_scrape_annotations_agree(overlays: dict[str, Rendered]) -> None:
    for rendered in _each(overlays):
        for deployment in rendered.servers():
            container = the_container(deployment)
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            metrics_port = container_port(container, "metrics")
            assert env_values(container)["AGENTMESH_METRICS_PORT"] == str(metrics_port)
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == str(metrics_port)
            assert annotations["prometheus.io/path"] == "/metrics"


def test_servers_export_traces_to_the_collector(overlays: dict[str, Rendered]) -> None:
    for rendered in _each(overlays):
        for deployment in rendered.servers():
            container = the_container(deployment)
            env = env_values(container)
            endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
            assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
            assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
            assert 0 <= float(env["OTEL_TRACES_SAMPLER_ARG"]) <= 1
            # Each service names itself after its own label.
            (service_name,) = [e for e in container["env"] if e["name"] == "OTEL_SERVICE_NAME"]
            assert service_name["valueFrom"]["fieldRef"]["fieldPath"] == (
                "metadata.labels['app.kubernetes.io/name']"
            )
            # $(VAR) references only work for variables defined earlier in the list.
            names = env_names(container)
            attributes = env["OTEL_RESOURCE_ATTRIBUTES"]
            for ref in re.findall(r"\$\((\w+)\)", attributes):
                assert names.index(ref) < names.index("OTEL_RESOURCE_ATTRIBUTES"), ref
                attributes = attributes.replace(f"$({ref})", env.get(ref, f"<{ref}>"))
            pairs = dict(item.split("=", 1) for item in attributes.split(","))
            assert pairs["deployment.environment.name"] == rendered.name
            assert pairs["k8s.pod.name"] == "<POD_NAME>"
            # The endpoint is a Service of this overlay, on a port it serves.
            collector = rendered.get("Service", str(endpoint.hostname))
            assert endpoint.port in {p["port"] for p in collector["spec"]["ports"]}


# -- configuration -----------------------------------------------------------------


def test_gateway_config_routes_every_agent_to_its_service(
    overlays: dict[str, Rendered], tmp_path: Path
) -> None:
    for rendered in _each(overlays):
        gateway = rendered.get("Deployment", "gateway")
        settings = _settings(gateway)
        assert isinstance(settings, GatewaySettings)
        assert settings.config is not None
        volume = mounted_volume(gateway, str(settings.config))
        configmap = rendered.get("ConfigMap", volume["configMap"]["name"])
        source = tmp_path / f"{rendered.name}-gateway.yaml"
        source.write_text(configmap["data"][settings.config.name], encoding="utf-8")

        config = load_config(source, environ={})  # the gateway's own parser and validation
        assert set(config.agents) == set(REFERENCE_AGENTS)
        for name, agent in config.agents.items():
            (address,) = agent.addresses
            match = DNS_ADDRESS.match(address)
            assert match, f"{name}: {address} is not a dns:/// Service address"
            assert match["ns"] in (None, "agentmesh"), f"{name}: another namespace"
            service = rendered.get("Service", match["host"])
            assert service["spec"]["clusterIP"] == "None", f"{name}: dns:/// needs headless"
            deployment = rendered.agents()[name]
            assert _service_selecting(rendered, deployment) is service
            assert int(match["port"]) == container_port(the_container(deployment), "grpc")


def test_workflow_configmap_holds_the_example_workflows(base: Rendered) -> None:
    """deploy/k8s/base/config/workflows/ is a copy of examples/*.yaml, kept in step."""
    data = base.configmap("gateway-workflows").get("data") or {}
    examples = {p.name: p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.yaml"))}
    assert data == examples


def test_gateway_mounts_config_and_workflows_where_settings_point(
    overlays: dict[str, Rendered],
) -> None:
    for rendered in _each(overlays):
        gateway = rendered.get("Deployment", "gateway")
        env = env_values(the_container(gateway))
        workflows = mounted_volume(gateway, env["AGENTMESH_WORKFLOW_DIR"])
        assert (
            workflows["configMap"]["name"]
            == rendered.configmap("gateway-workflows")["metadata"]["name"]
        )
        config = mounted_volume(gateway, env["AGENTMESH_CONFIG"])
        assert (
            config["configMap"]["name"] == rendered.configmap("gateway-config")["metadata"]["name"]
        )


def test_every_referenced_configmap_and_secret_exists_or_is_documented(
    overlays: dict[str, Rendered],
) -> None:
    """Objects the manifests need but do not create are ones docs/deploy.md tells how to make."""
    docs = DOCS.read_text(encoding="utf-8")
    for rendered in _each(overlays):
        for deployment in rendered.of_kind("Deployment"):
            spec = pod_spec(deployment)
            refs: list[tuple[str, str, bool]] = []
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    secret = volume["secret"]
                    refs.append(("Secret", secret["secretName"], secret.get("optional", False)))
                if "configMap" in volume:
                    cm = volume["configMap"]
                    refs.append(("ConfigMap", cm["name"], cm.get("optional", False)))
            for container in containers(deployment):
                for source in container.get("envFrom", []):
                    for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                        if key in source:
                            ref = source[key]
                            refs.append((kind, ref["name"], ref.get("optional", False)))
            for kind, name, _optional in refs:
                if rendered.find(kind, name) is None:
                    assert f"`{name}`" in docs, f"{rendered.name}: {kind} {name} is not documented"


# -- hardening -------------------------------------------------------------------


def test_every_container_is_hardened(overlays: dict[str, Rendered]) -> None:
    for rendered in _each(overlays):
        for deployment in rendered.of_kind("Deployment"):
            name = deployment["metadata"]["name"]
            spec = pod_spec(deployment)
            assert spec["automountServiceAccountToken"] is False, name
            assert rendered.get("ServiceAccount", spec["serviceAccountName"])
            pod_context = spec["securityContext"]
            assert pod_context["runAsNonRoot"] is True, name
            assert pod_context["seccompProfile"]["type"] == "RuntimeDefault", name
            for container in containers(deployment):
                context = container["securityContext"]
                assert context["runAsNonRoot"] is True, name
                assert context["runAsUser"] >= 10000, name
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["readOnlyRootFilesystem"] is True, name
                assert context.get("privileged", False) is False, name
                assert context["capabilities"] == {"drop": ["ALL"]}, name
                assert context["seccompProfile"]["type"] == "RuntimeDefault", name
                for bound in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][bound]), name
                assert "readinessProbe" in container, name
                assert "livenessProbe" in container, name


def test_the_namespace_enforces_the_restricted_pod_security_standard(
    overlays: dict[str, Rendered],
) -> None:
    for rendered in _each(overlays):
        (namespace,) = rendered.of_kind("Namespace")
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        others = [o for o in rendered.objects if o["kind"] != "Namespace"]
        assert {o["metadata"].get("namespace") for o in others} == {namespace["metadata"]["name"]}


# -- network policy ------------------------------------------------------------------


def _pod(rendered: Rendered, name: str) -> Pod:
    return Pod(pod_labels(rendered.get("Deployment", name)))


def test_network_policy_allows_the_mesh_and_nothing_else(overlays: dict[str, Rendered]) -> None:
    client = Pod({"app": "client"}, namespace="clients")  # a pod of another namespace
    stranger = Pod({"app": "stranger"})  # a pod of this namespace that is not ours
    dns = Pod({"k8s-app": "kube-dns"}, namespace="kube-system")
    for rendered in _each(overlays):
        allowed = functools.partial(connection_allowed, rendered)
        gateway = _pod(rendered, "gateway")
        jaeger = _pod(rendered, "jaeger")
        agents = [_pod(rendered, name) for name in REFERENCE_AGENTS]
        assert allowed(client, gateway, 50051), "clients reach the gateway"
        assert not allowed(client, gateway, 8081), "only the gRPC port is open"
        assert not allowed(stranger, gateway, 50051), "default deny covers the namespace"
        assert allowed(client, gateway, 9464), "Prometheus scrapes metrics"
        for agent in agents:
            assert allowed(gateway, agent, 50051), "the gateway reaches every agent"
            assert not allowed(client, agent, 50051), "only the gateway calls agents"
            assert not allowed(agents[0], agent, 50051), "agents do not call agents"
            # Each side holds on its own: agents admit the gateway only.
            assert not ingress_allowed(rendered, agents[0], agent, 50051)
            assert not ingress_allowed(rendered, stranger, agent, 50051)
            assert not allowed(agent, gateway, 50051)
            assert allowed(agent, jaeger, 4317), "agents export traces"
            assert allowed(agent, dns, 53), "agents resolve names"
        assert allowed(gateway, jaeger, 4317), "the gateway exports traces"
        assert allowed(gateway, dns, 53), "the gateway resolves dns:/// addresses"
        assert not allowed(client, jaeger, 4317), "the collector is for the mesh"
        assert not allowed(gateway, jaeger, 16686), "the UI is reached by port-forward"
        redis = rendered.find("Deployment", "redis")
        if redis is not None:
            store = Pod(pod_labels(redis))
            assert allowed(gateway, store, 6379)
            assert not allowed(agents[0], store, 6379)
            memory = _pod(rendered, "memory")
            assert allowed(memory, store, 6379), "the memory agent keeps its spaces in Redis"
            assert not allowed(client, store, 6379)


def test_network_policy_lets_delegating_agents_reach_the_gateway(
    overlays: dict[str, Rendered],
) -> None:
    for rendered in _each(overlays):
        gateway = _pod(rendered, "gateway")
        plain = _pod(rendered, "summarizer")
        delegating = Pod({**plain.labels, "agentmesh.dev/delegates": "true"})
        assert connection_allowed(rendered, delegating, gateway, 50051)
        assert not connection_allowed(rendered, delegating, gateway, 8080), "gRPC port only"
        assert not connection_allowed(rendered, plain, gateway, 50051), "the label is needed"
        assert not connection_allowed(rendered, delegating, plain, 50051), "not other agents"
        # A pod that only carries the label is no agent: still shut out.
        impostor = Pod({"agentmesh.dev/delegates": "true"})
        assert not connection_allowed(rendered, impostor, gateway, 50051)
        # The gateway admits them in their own right, not through the clients' rule.
        narrowed = Rendered(
            rendered.name,
            [
                o
                for o in rendered.objects
                if not (
                    o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "gateway-from-clients"
                )
            ],
        )
        assert connection_allowed(narrowed, delegating, gateway, 50051)
        assert not ingress_allowed(narrowed, plain, gateway, 50051)


# -- prod ----------------------------------------------------------------------------


def test_prod_autoscales_and_budgets_every_server(overlays: dict[str, Rendered]) -> None:
    prod = overlays["prod"]
    autoscalers = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in prod.of_kind("HorizontalPodAutoscaler")
    }
    budgets = prod.of_kind("PodDisruptionBudget")
    for deployment in prod.servers():
        name = deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"], f"{name}: the HPA owns the replica count"
        hpa = autoscalers[name]
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], name
        (budget,) = [
            b for b in budgets if selector_matches(b["spec"]["selector"], pod_labels(deployment))
        ]
        assert budget["spec"].get("maxUnavailable") == 1, f"{name}: one pod at a time"


def test_prod_serves_tls_and_requires_api_keys(overlays: dict[str, Rendered]) -> None:
    prod = overlays["prod"]
    for deployment in prod.servers():
        name = deployment["metadata"]["name"]
        env = env_values(the_container(deployment))
        for variable in ("AGENTMESH_TLS_CERT_FILE", "AGENTMESH_TLS_KEY_FILE"):
            assert "secret" in mounted_volume(deployment, env[variable]), f"{name}: {variable}"
        if component(deployment) == "agent":
            ca = env["AGENTMESH_TLS_CLIENT_CA_FILE"]
            assert "secret" in mounted_volume(deployment, ca), f"{name}: mTLS client CA"
    gateway = prod.get("Deployment", "gateway")
    env = env_values(the_container(gateway))
    for variable in (
        "AGENTMESH_UPSTREAM_TLS_CA_FILE",
        "AGENTMESH_UPSTREAM_TLS_CERT_FILE",
        "AGENTMESH_UPSTREAM_TLS_KEY_FILE",
        "AGENTMESH_AUTH_KEYS_FILE",
    ):
        volume = mounted_volume(gateway, env[variable])
        assert volume["secret"].get("optional", False) is False, f"{variable}: fail closed"
    assert env["AGENTMESH_AUTH_REQUIRED"] == "true"


def test_prod_gateway_shares_state_through_redis(overlays: dict[str, Rendered]) -> None:
    prod = overlays["prod"]
    settings = _settings(prod.get("Deployment", "gateway"))
    assert isinstance(settings, GatewaySettings)
    assert settings.redis_url is not None
    url = urlsplit(settings.redis_url)
    service = prod.get("Service", str(url.hostname))
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    assert "AGENTMESH_REDIS_URL" not in env_values(
        the_container(overlays["dev"].get("Deployment", "gateway"))
    ), "dev runs one gateway with in-memory state"


def test_prod_memory_agent_shares_its_spaces_through_the_gateways_redis(
    overlays: dict[str, Rendered],
) -> None:
    prod = overlays["prod"]
    memory = prod.get("Deployment", "memory")
    env = env_values(the_container(memory))
    gateway = env_values(the_container(prod.get("Deployment", "gateway")))
    values = {k.removeprefix("AGENTMESH_").lower(): v for k, v in env.items()}
    settings = MemorySettings.model_validate(
        {k: v for k, v in values.items() if k in MemorySettings.model_fields}
    )
    assert settings.redis_url == gateway["AGENTMESH_REDIS_URL"]
    assert settings.redis_password_file is not None
    assert "secret" in mounted_volume(memory, str(settings.redis_password_file))
    dev = env_values(the_container(overlays["dev"].get("Deployment", "memory")))
    assert "AGENTMESH_REDIS_URL" not in dev, "dev runs one memory pod with in-process spaces"


# -- the image -------------------------------------------------------------------------


def test_image_agrees_with_the_manifests(overlays: dict[str, Rendered]) -> None:
    dockerfile = (REPO_ROOT / "deploy" / "docker" / "Dockerfile").read_text(encoding="utf-8")
    dockerignore = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    # The build stage runs the one codegen entry point, on every source root.
    assert "protos/codegen.py --check" in dockerfile
    for root in ("protos", "services", "gateway"):
        assert f"COPY {root} ./{root}" in dockerfile
        assert f"!{root}/" in dockerignore
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    exposed = {int(p) for p in re.findall(r"^EXPOSE (.+)$", dockerfile, re.MULTILINE)[0].split()}
    assert f'CMD ["python", "-m", "{GATEWAY_MODULE}"]' in dockerfile
    for rendered in _each(overlays):
        for deployment in rendered.servers():
            context = the_container(deployment)["securityContext"]
            assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user
            container = the_container(deployment)
            assert {
                container_port(container, "grpc"),
                container_port(container, "metrics"),
            } <= exposed
