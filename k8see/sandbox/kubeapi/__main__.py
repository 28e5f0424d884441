"""``python -m k8see.sandbox.kubeapi``: run the sandbox API server until SIGTERM or SIGINT.

``k8see sandbox apiserver`` calls ``main`` with the same options.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from k8see.sandbox.kubeapi.sandbox import KubeSandbox


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="k8see sandbox apiserver",
        description="Serve a sandbox Kubernetes API for kubectl, helm and the kubernetes client.",
        epilog="Example: k8see sandbox apiserver --port 0 --kubeconfig .sandbox/kubeconfig",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free)")
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument(
        "--ready-delay", type=float, default=0.2, help="seconds until pods are Ready"
    )
    parser.add_argument(
        "--state-file", default=None, help="JSON file to load and keep the state in"
    )
    parser.add_argument("--crash-image-pattern", default=None, help="regex: images that crash-loop")
    parser.add_argument(
        "--pull-fail-image-pattern", default=None, help="regex: images that fail to pull"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start the sandbox, print ``listening on URL``, and serve until a signal; return 0."""
    args = _parser().parse_args(argv)
    if args.port < 0 or args.port > 65535:
        print("Error: --port must be between 0 and 65535.", file=sys.stderr)
        return 2
    sandbox = KubeSandbox(
        port=args.port,
        ready_delay_seconds=args.ready_delay,
        crash_image_pattern=args.crash_image_pattern,
        pull_fail_image_pattern=args.pull_fail_image_pattern,
        state_file=args.state_file,
    )
    try:
        sandbox.start()
    except OSError as exc:
        print(f"Error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}.", file=sys.stderr)
        return 3
    sandbox.write_kubeconfig(args.kubeconfig)
    print(f"listening on {sandbox.url}", flush=True)
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    done.wait()
    sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
