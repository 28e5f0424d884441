#!/usr/bin/env bash
# Regenerate the charts' README.md from README.md.gotmpl and values.yaml (helm-docs, built from
# its Go module by scripts/build-go-tools.sh). tests/charts/test_chart_readme.py runs the same
# command on a copy and fails when a README is out of step: run `make chart-docs` and commit.
#   scripts/chart-docs.sh [CHARTS_DIR]     default: the repository's charts/
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHARTS="${1:-$ROOT/charts}"
cd "$CHARTS/.."
exec "$ROOT/.tools/bin/helm-docs" --log-level warning --chart-search-root "$(basename "$CHARTS")" \
  --chart-to-generate "$(basename "$CHARTS")/k8s-ee-app,$(basename "$CHARTS")/k8see-platform" \
  --template-files README.md.gotmpl --sort-values-order file --skip-version-footer
