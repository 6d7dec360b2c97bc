#!/usr/bin/env bash
# Build the agentmesh image with buildah from a locally made Debian base, then
# start containers from it the way Kubernetes runs them (read-only root, no
# capabilities, user 10001) and check that they serve: health on the agent's
# port, and a call through the gateway to that agent.
#
# For machines that cannot pull base images. Needs root, the Debian packages
# debootstrap, buildah, podman and runc, network access to a Debian mirror and
# to PyPI, and the repository's .venv (`make install`) for the client side.
# Heavy (minutes, a few hundred MB): not part of CI.
#
#   deploy/build-image.sh [IMAGE]        # default IMAGE: localhost/agentmesh:dev
#
# Environment: BASE_IMAGE (default localhost/agentmesh-python-base:bookworm; made
# with debootstrap when missing), DEBIAN_MIRROR, AGENT_PORT, GATEWAY_PORT, METRICS_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${1:-localhost/agentmesh:dev}
BASE_IMAGE=${BASE_IMAGE:-localhost/agentmesh-python-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
AGENT_PORT=${AGENT_PORT:-50161}
GATEWAY_PORT=${GATEWAY_PORT:-50151}
METRICS_PORT=${METRICS_PORT:-59464}
# runc and explicit ulimits: podman's defaults (crun, inherited limits) fail in
# some nested container environments.
RUN_FLAGS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
# The same hardening as the Kubernetes manifests.
HARDENING=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges)

for tool in debootstrap buildah podman runc; do
    command -v "$tool" >/dev/null || { echo "build-image: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done
[[ -x .venv/bin/python ]] || { echo "build-image: .venv is missing (make install)" >&2; exit 2; }

workdir=$(mktemp -d)
containers=()
cleanup() {
    for name in "${containers[@]}"; do podman rm --force --time 0 "$name" >/dev/null 2>&1 || true; done
    rm -rf "$workdir"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

if ! podman image exists "$BASE_IMAGE"; then
    step "making the base image $BASE_IMAGE with debootstrap (Debian bookworm, python3)"
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$workdir/rootfs" "$DEBIAN_MIRROR" >"$workdir/debootstrap.log" 2>&1 \
        || { tail -20 "$workdir/debootstrap.log" >&2; exit 1; }
    # The host's CA bundle: pip in the build stage must trust what the host trusts.
    cp /etc/ssl/certs/ca-certificates.crt "$workdir/rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$workdir"/rootfs/var/cache/apt/archives/*.deb "$workdir"/rootfs/var/lib/apt/lists/*
    tar -C "$workdir/rootfs" -c . | podman import --change 'CMD ["python3"]' - "$BASE_IMAGE"
fi

step "building $IMAGE from $BASE_IMAGE"
buildah bud --network host --layers --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
    -f deploy/docker/Dockerfile -t "$IMAGE" .

step "image facts"
podman image inspect --format 'size: {{.Size}} bytes; user: {{.Config.User}}; cmd: {{.Config.Cmd}}' "$IMAGE"
podman run --rm "${RUN_FLAGS[@]}" "${HARDENING[@]}" --network none "$IMAGE" sh -c \
    'echo "uid: $(id -u)"; for t in gcc cc make pip; do command -v "$t" >/dev/null && echo "present: $t" || echo "absent: $t"; done'

step "an agent (calculator) on 127.0.0.1:$AGENT_PORT"
agent=agentmesh-smoke-agent-$$
containers+=("$agent")
podman run -d --name "$agent" "${RUN_FLAGS[@]}" "${HARDENING[@]}" --network host \
    -e AGENTMESH_HOST=127.0.0.1 -e AGENTMESH_PORT="$AGENT_PORT" -e AGENTMESH_LOG_FORMAT=text \
    -e AGENTMESH_METRICS_PORT="$METRICS_PORT" -e AGENTMESH_DRAIN_DELAY=1 \
    "$IMAGE" python -m agentmesh.agents.calculator >/dev/null

.venv/bin/python - "127.0.0.1:$AGENT_PORT" <<'PY'
"""Wait until grpc.health.v1 answers for service "" and print its status."""
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

address = sys.argv[1]
with grpc.insecure_channel(address) as channel:
    stub = health_pb2_grpc.HealthStub(channel)
    for _ in range(100):
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            time.sleep(0.2)
            continue
        print(f"health of {address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
        sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
sys.exit(f"no health answer from {address}")
PY

step "the gateway on 127.0.0.1:$GATEWAY_PORT, routing to the agent"
gateway=agentmesh-smoke-gateway-$$
containers+=("$gateway")
podman run -d --name "$gateway" "${RUN_FLAGS[@]}" "${HARDENING[@]}" --network host \
    -e AGENTMESH_HOST=127.0.0.1 -e AGENTMESH_PORT="$GATEWAY_PORT" -e AGENTMESH_LOG_FORMAT=text \
    -e AGENTMESH_AGENT_CALCULATOR_ADDRESSES="127.0.0.1:$AGENT_PORT" \
    "$IMAGE" >/dev/null
for _ in $(seq 50); do
    .venv/bin/agentmesh agents --gateway "127.0.0.1:$GATEWAY_PORT" >/dev/null 2>&1 && break
    sleep 0.2
done
printf 'agentmesh call calculator 2*(3+4)**2 -> '
.venv/bin/agentmesh call --gateway "127.0.0.1:$GATEWAY_PORT" calculator '2*(3+4)**2'

step "the agent's metrics on 127.0.0.1:$METRICS_PORT/metrics"
.venv/bin/python - "http://127.0.0.1:$METRICS_PORT/metrics" <<'PY'
"""Print the agentmesh_* request counters the agent exposes."""
import sys
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as reply:
        lines = reply.read().decode().splitlines()
except OSError as exc:
    sys.exit(f"no metrics at {sys.argv[1]}: {exc}")
counters = [line for line in lines if line.startswith("agentmesh_rpc_requests_total")]
print("\n".join(counters) or "no agentmesh_rpc_requests_total samples yet")
PY

step "SIGTERM drains and exits"
for name in "$gateway" "$agent"; do
    podman stop --time 30 "$name" >/dev/null
    printf '%s exited with %s\n' "$name" "$(podman inspect --format '{{.State.ExitCode}}' "$name")"
done
podman logs "$agent" 2>&1 | tail -4
