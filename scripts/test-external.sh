#!/usr/bin/env bash
# Run the Kubernetes tests twice in a row against one cluster started outside pytest, as
# K8SEE_TEST_KUBECONFIG points them at kind or EKS: the second run proves the first left nothing
# that collides (docs/sandbox.md, "On another cluster"). Extra arguments go to pytest.
#
#   scripts/test-external.sh                      # the default selection below
#   scripts/test-external.sh tests/stages -x      # another one
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python
[ -x "$PYTHON" ] || { echo "run \`make bootstrap\` first" >&2; exit 1; }

work=$(mktemp -d /tmp/k8see-test-external.XXXXXX)
"$PYTHON" scripts/external_cluster.py --env-file "$work/env" >"$work/cluster.log" 2>&1 &
cluster_pid=$!
stop_cluster() {
    kill -TERM "$cluster_pid" 2>/dev/null || true
    wait "$cluster_pid" 2>/dev/null || true
}
trap stop_cluster EXIT

echo "starting the cluster and its registry (log: $work/cluster.log)"
for _ in $(seq 600); do
    [ -s "$work/env" ] && break
    kill -0 "$cluster_pid" 2>/dev/null || { cat "$work/cluster.log" >&2; exit 1; }
    sleep 1
done
[ -s "$work/env" ] || { echo "the cluster did not start in 10 minutes" >&2; exit 1; }
# shellcheck disable=SC1091
source "$work/env"
cat "$work/env"

if [ $# -eq 0 ]; then
    # Every test file that takes a cluster fixture as an argument; e2e tests and drills run
    # a local platform of their own.
    fixtures='kubeconfig|kube_api_client|kube_env|kube_namespace|testapp_image|cluster_registry|kube_faults'
    mapfile -t files < <(grep -rlE --include='test_*.py' "(^|[(, ])($fixtures): " tests \
        | grep -vE '^tests/(e2e|drills|benchmarks)/' | sort)
    set -- "${files[@]}" -m "not e2e"
fi
status=0
for run in 1 2; do
    echo "== run $run"
    start=$(date +%s)
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider --basetemp="$work/pytest-$run" "$@" || status=1
    echo "== run $run took $(( $(date +%s) - start ))s"
done
# Namespaces the last tests deleted may still be terminating: give them two minutes.
for _ in $(seq 120); do
    phases=$(.tools/bin/kubectl --kubeconfig "$K8SEE_TEST_KUBECONFIG" get namespaces \
        -o 'jsonpath={.items[*].status.phase}')
    [[ $phases == *Terminating* ]] || break
    sleep 1
done
echo "== left on the cluster (beyond what a new cluster has):"
kinds=namespaces,clusterroles,clusterrolebindings,crds,validatingadmissionpolicies
kinds=$kinds,validatingadmissionpolicybindings,validatingwebhookconfigurations,priorityclasses
.tools/bin/kubectl --kubeconfig "$K8SEE_TEST_KUBECONFIG" get "$kinds" -o name \
    | grep -vE '^namespace/(default|kube-system|kube-public|kube-node-lease)$|/system:|^clusterrole[a-z0-9.]*/(admin|edit|view|cluster-admin)$|^priorityclass[a-z0-9.]*/system-' \
    || echo "(nothing)"
exit $status
