"""Stand up an "other" cluster for the test suite, the way a user of kind or EKS would have one.

A local cluster started outside pytest, a docker-registry on a fixed loopback port that its node
pulls from, and the test app pushed there by digest. Prints the environment that points the
suite at them (``K8SEE_TEST_KUBECONFIG``, ``K8SEE_TEST_REGISTRY``, ``K8SEE_TEST_APP_IMAGE``) to
``--env-file`` and runs until SIGINT/SIGTERM, then stops both. Used by
``scripts/test-external.sh``; see docs/sandbox.md ("On another cluster").
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry-port", type=int, default=5055)
    parser.add_argument("--env-file", type=Path)
    parser.add_argument(
        "--push-testapp",
        metavar="HOST",
        help="only push the test app to the plain-HTTP registry at HOST (e.g. localhost:5001, "
        "kind's local registry) and print K8SEE_TEST_APP_IMAGE",
    )
    args = parser.parse_args()
    if args.push_testapp:
        from tests.fixtures.kube import ClusterRegistry, push_testapp

        repository = "k8see-tests/testapp"
        digest = push_testapp(ClusterRegistry(host=args.push_testapp), repository, ["v1"])
        print(f"export K8SEE_TEST_APP_IMAGE={args.push_testapp}/{repository}@{digest}")
        return 0
    if args.env_file is None:
        parser.error("--env-file is required to start a cluster")

    from k8see_sandbox.cluster import LocalCluster
    from tests.fixtures.images import LocalRegistry
    from tests.fixtures.kube import push_testapp

    workdir = Path(tempfile.mkdtemp(prefix="k8see-external-"))
    registry = LocalRegistry(workdir=workdir / "registry", port=args.registry_port)
    registry.workdir.mkdir()
    cluster = LocalCluster()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        registry.start()
        cluster.start()
        cluster.trust_registry(registry.host)
        repository = "k8see-external/testapp"
        digest = push_testapp(registry, repository, ["v1"])
        env = {
            "K8SEE_TEST_KUBECONFIG": str(cluster.admin_kubeconfig),
            "K8SEE_TEST_REGISTRY": registry.host,
            "K8SEE_TEST_APP_IMAGE": f"{registry.host}/{repository}@{digest}",
        }
        args.env_file.write_text(
            "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
        )
        print(f"ready: source {args.env_file}", flush=True)
        stop.wait()
    finally:
        cluster.stop()
        if registry.proc is not None:
            registry.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
