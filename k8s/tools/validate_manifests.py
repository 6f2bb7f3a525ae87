"""Validates rendered Kubernetes manifests against JSON schemas, offline.

Usage: validate_manifests.py --k8s-version 1.37 --schemas DIR [--verbose] TARGET=RENDERED...

Each RENDERED file is the output of `kubectl kustomize TARGET`. Every document in it is
checked:

- built-in kinds against the official Kubernetes schemas that kubernetes-validate ships, in
  strict mode (an unknown field is an error, as it would be dropped by the API server);
- any other kind against DIR/<kind>-<group>-<version>.json, a schema written for it;
- a kind with neither is an error, never a silent skip.

Exits 1 if any document fails, 2 on a usage or setup error.
"""

import argparse
import json
import os
import sys
import time

import jsonschema
import kubernetes_validate
import yaml


def load_local_schemas(directory):
    """Maps (apiVersion, kind) to a validator for every schema file in `directory`."""
    validators = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(directory, name)) as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schema)
        props = schema.get("properties", {})
        api_version = props.get("apiVersion", {}).get("const")
        kind = props.get("kind", {}).get("const")
        if not api_version or not kind:
            raise SystemExit(f"{name}: a schema must pin apiVersion and kind with const")
        validators[(api_version, kind)] = (name, jsonschema.Draft202012Validator(schema))
    return validators


def describe(doc):
    meta = doc.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('kind', '?')} {where}{meta.get('name', '?')}"


def error_path(error):
    return ".".join(str(p) for p in error.absolute_path) or "(document)"


def check_local(doc, schema_name, validator):
    """Returns the error messages of a custom resource; every error, not just the first."""
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{error_path(e)}: {e.message} (schema {schema_name})" for e in errors]


def check_core(doc, version):
    """Returns the error messages of a built-in kind, or None when there is no core schema."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
        return []
    except kubernetes_validate.SchemaNotFoundError:
        return None
    except kubernetes_validate.ValidationError as e:
        return [f"{error_path(e)}: {e.message} (Kubernetes {e.version}, strict)"]


def check_document(doc, version, local):
    """Returns (how it was checked, error messages)."""
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return "shape", ["not a Kubernetes object (apiVersion and kind are required)"]
    key = (doc["apiVersion"], doc["kind"])
    if key in local:
        name, validator = local[key]
        return "custom", check_local(doc, name, validator)
    errors = check_core(doc, version)
    if errors is None:
        return "missing", [
            f"no schema for {doc['apiVersion']} {doc['kind']}: not a built-in kind of "
            f"Kubernetes {version}, and no file for it in k8s/schemas/"
        ]
    return "core", errors


def validate_target(target, path, version, local, verbose):
    """Checks one rendered target; returns {"core": n, "custom": n, "invalid": n}."""
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        print(f"FAIL {target}: renders no documents")
        return {"core": 0, "custom": 0, "invalid": 1}
    counts = {"core": 0, "custom": 0, "invalid": 0}
    custom_kinds = set()
    for doc in docs:
        how, errors = check_document(doc, version, local)
        for message in errors:
            print(f"FAIL {target}: {describe(doc)}: {message}")
        if errors:
            counts["invalid"] += 1
            continue
        counts[how] += 1
        if how == "custom":
            custom_kinds.add(doc["kind"])
        if verbose:
            print(f"ok   {target}: {describe(doc)}{' (k8s/schemas)' if how == 'custom' else ''}")
    status = "FAIL" if counts["invalid"] else "ok  "
    custom = f", {counts['custom']} custom ({', '.join(sorted(custom_kinds))})" if custom_kinds else ""
    print(f"{status} {target}: {counts['core']} built-in{custom} of {len(docs)} documents valid")
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s-version", required=True)
    parser.add_argument("--schemas", required=True)
    parser.add_argument("--verbose", action="store_true", help="print every valid document")
    parser.add_argument("rendered", nargs="+", metavar="TARGET=RENDERED")
    args = parser.parse_args()

    started = time.monotonic()
    local = load_local_schemas(args.schemas)
    totals = {"core": 0, "custom": 0, "invalid": 0}
    for arg in args.rendered:
        target, _, path = arg.partition("=")
        counts = validate_target(target, path, args.k8s_version, local, args.verbose)
        for key in totals:
            totals[key] += counts[key]

    print(
        f"{sum(totals.values())} documents in {len(args.rendered)} targets against Kubernetes "
        f"{args.k8s_version} (strict): {totals['core']} built-in and {totals['custom']} custom "
        f"resources valid, {totals['invalid']} invalid ({time.monotonic() - started:.1f}s)"
    )
    return 1 if totals["invalid"] else 0


if __name__ == "__main__":
    sys.exit(main())
