"""A real Kubernetes cluster on this machine, for ``make demo``, ``make test`` and the benchmarks.

The binaries are the official ones, built from their Go modules at pinned versions by
``make bootstrap`` (``scripts/build-go-tools.sh``): etcd, kube-apiserver (RBAC and Node
authorization, Pod Security and the other default admission plugins), kube-controller-manager,
kube-scheduler, and one node: kubelet with Debian's containerd, runc and CNI plugins, and a
pause image built locally. Pods really run; probes, logs, security contexts and the service
proxy are the kubelet's and the API server's. See ``node`` for the network and what a single
development node leaves out (kube-proxy, NetworkPolicy enforcement); cluster DNS is a small
stand-in for CoreDNS (``dns``).
"""

from k8see_sandbox.cluster.local import LocalCluster

__all__ = ["LocalCluster"]
