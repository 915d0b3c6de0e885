#!/usr/bin/env bash
# Writes deploy/kubernetes/overlays/prometheus-operator/prometheusrule.yaml from
# deploy/prometheus/cfaas.rules.yml (the one place the rules are written).
set -euo pipefail
cd "$(dirname "$0")/.."
src=deploy/prometheus/cfaas.rules.yml
out=deploy/kubernetes/overlays/prometheus-operator/prometheusrule.yaml
{
  echo "# Generated from $src by scripts/gen-prometheusrule.sh: do not edit."
  echo "apiVersion: monitoring.coreos.com/v1"
  echo "kind: PrometheusRule"
  echo "metadata:"
  echo "  name: cfaas"
  echo "  namespace: openfaas"
  echo "  labels:"
  echo "    app: cfaas"
  echo "spec:"
  sed -e '/^#/d' -e 's/^/  /' "$src"
} > "$out"
echo "wrote $out"
