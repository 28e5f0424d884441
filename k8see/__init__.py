"""k8see."""
