"""``python -m k8see`` runs the CLI."""

from k8see.cli import main

main()
