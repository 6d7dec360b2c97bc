#!/usr/bin/env bash
# Checks of the Kubernetes manifests, as CI runs them. For each overlay under
# deploy/k8s/overlays/:
#   1. render it with `kubectl kustomize`;
#   2. check its custom resources (the monitoring component's ServiceMonitor
#      and PrometheusRule) against the project's JSON Schemas in
#      deploy/schemas, which admit no field they do not list
#      (tests/deploy/custom_resources.py), and set them apart;
#   3. validate every other object against the Kubernetes $K8S_VERSION
#      schemas with `kubernetes-validate --strict` (unknown fields fail; so
#      does any warning, e.g. an API version the schemas do not know: a
#      custom resource without a schema in deploy/schemas fails here);
#   4. `promtool check rules` on the PrometheusRules' groups, and
#      `promtool test rules` with the alert unit tests next to them
#      (deploy/k8s/components/monitoring/alerts.test.yaml);
#   5. run `checkov --framework kubernetes` with the overlay's checkov.yaml
#      (each skipped check carries its reason there): zero failures.
# Then the consistency tests between code and manifests (tests/deploy).
#
# kubernetes-validate and checkov live in their own virtualenv ($DEPLOY_TOOLS,
# default .venv-deploy, made from deploy/requirements-tools.txt when missing):
# checkov pins many packages that must not reach the project's .venv.
# promtool comes from Debian's prometheus package (.ci/run installs it).
#
#   deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-1.32.0}
DEPLOY_TOOLS=${DEPLOY_TOOLS:-.venv-deploy}
PYTHON=${PYTHON:-.venv/bin/python}

command -v kubectl >/dev/null || { echo "deploy/check.sh: kubectl is needed" >&2; exit 2; }
command -v promtool >/dev/null || {
    echo "deploy/check.sh: promtool is needed (Debian package prometheus)" >&2
    exit 2
}
if [[ ! -x $DEPLOY_TOOLS/bin/checkov || ! -x $DEPLOY_TOOLS/bin/kubernetes-validate ]]; then
    echo "== installing the manifest checkers into $DEPLOY_TOOLS"
    python3 -m venv "$DEPLOY_TOOLS"
    "$DEPLOY_TOOLS/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements-tools.txt
fi

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
failed=0

ALERT_TESTS=deploy/k8s/components/monitoring/alerts.test.yaml

for overlay in deploy/k8s/overlays/*/; do
    name=$(basename "$overlay")
    manifest="$rendered/$name.yaml"
    core="$rendered/$name.core.yaml"
    mkdir -p "$rendered/$name"
    rules="$rendered/$name/agentmesh-rules.yaml"
    echo "== $name: kubectl kustomize"
    kubectl kustomize "$overlay" >"$manifest"
    echo "   $(grep -c '^kind:' "$manifest") objects"

    echo "== $name: custom resources against deploy/schemas"
    "$PYTHON" tests/deploy/custom_resources.py "$manifest" "$core" "$rules" || failed=1

    echo "== $name: kubernetes-validate $K8S_VERSION --strict"
    # --quiet prints only warnings and failures: any output is a failure.
    if ! report=$("$DEPLOY_TOOLS/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$core" 2>&1) \
        || [[ -n $report ]]; then
        echo "$report"
        failed=1
    fi

    if grep -q '^kind: PrometheusRule' "$manifest"; then
        echo "== $name: promtool check rules, promtool test rules"
        promtool check rules "$rules" || failed=1
        # The unit tests name the rule file next to them.
        cp "$ALERT_TESTS" "$rendered/$name/"
        promtool test rules "$rendered/$name/$(basename "$ALERT_TESTS")" || failed=1
    fi

    echo "== $name: checkov"
    if ! BC_SKIP_MAPPING=TRUE "$DEPLOY_TOOLS/bin/checkov" --framework kubernetes \
        --config-file "$overlay/checkov.yaml" --file "$manifest" \
        --compact --quiet --skip-download; then
        failed=1
    fi
done

echo "== consistency of code and manifests (tests/deploy)"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/deploy || failed=1

if ((failed)); then
    echo "deploy/check.sh: FAILED" >&2
    exit 1
fi
echo "deploy/check.sh: all checks passed"
