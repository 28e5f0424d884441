#!/bin/sh
# The worker image's entrypoint: POOL picks the process, arguments override it.
#
#   POOL=build                        -> k8see worker --pool build [--concurrency $CONCURRENCY]
#   POOL=beat | flower | metrics      -> k8see beat | k8see flower | k8see metrics
#   <args starting with "-">          -> k8see <args>   (the platform chart passes k8see's own
#   <k8see subcommand> [args]         -> k8see <args>    arguments: --log-format json worker …)
#   <a program on PATH> [args]        -> that program   (k8see status …, sh, buildah …)
#
# Pool names are k8see's (`k8see worker --pool`): default, build, deploy, maintenance, all.
set -eu

# prometheus_client's multiprocess mode writes there and does not create it (the image and the
# chart both point it at a directory under /tmp, which may be a fresh emptyDir).
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi

POOLS="default build deploy maintenance all"
usage() {
    echo "k8see-entrypoint: $1" >&2
    echo "Set POOL to one of: $POOLS beat flower metrics (or pass a command)." >&2
    exit 2
}

if [ "$#" -gt 0 ]; then
    case "$1" in
        -*) exec k8see "$@" ;;
    esac
    if command -v -- "$1" >/dev/null 2>&1; then
        exec "$@"
    fi
    exec k8see "$@"
fi

case "${POOL:-}" in
    "") usage "POOL is not set." ;;
    beat) exec k8see beat -s "${BEAT_SCHEDULE_FILE:-/tmp/celerybeat-schedule}" ;;
    flower) exec k8see flower --address 0.0.0.0 --port "${FLOWER_PORT:-5555}" ;;
    metrics) exec k8see metrics --address 0.0.0.0 --port "${METRICS_PORT:-9808}" ;;
esac
for pool in $POOLS; do
    if [ "$POOL" = "$pool" ]; then
        if [ -n "${CONCURRENCY:-}" ]; then
            exec k8see worker --pool "$POOL" --concurrency "$CONCURRENCY"
        fi
        exec k8see worker --pool "$POOL"
    fi
done
usage "unknown POOL '$POOL'."
