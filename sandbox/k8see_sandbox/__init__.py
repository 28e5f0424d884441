"""Stand-ins that speak the real protocols: a Kubernetes API server and a GitHub API server.

Used by the tests and ``make demo`` only; nothing but ``k8see_sandbox.cli`` (lazily) and the tests
may import this package.
"""
