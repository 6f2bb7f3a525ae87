//! Loading the manifests in this folder, for tests.
//!
//! Paths are relative to the `k8s/` folder, found through `CARGO_MANIFEST_DIR`, so tests read
//! the very files that `kubectl apply -k` reads.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use crate::{Error, Result};

/// The `k8s/` folder.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document in a file under `k8s/`, in order; empty documents are skipped.
pub fn documents(relative: &str) -> Result<Vec<Value>> {
    let path = root().join(relative);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(&text) {
        let doc = Value::deserialize(de).map_err(|source| Error::Parse {
            path: path.clone(),
            source,
        })?;
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// The document of `kind` named `name` in a file under `k8s/`.
pub fn find(relative: &str, kind: &str, name: &str) -> Result<Value> {
    documents(relative)?
        .into_iter()
        .find(|doc| str_at(doc, &["kind"]) == Some(kind) && str_at(doc, &["metadata", "name"]) == Some(name))
        .ok_or_else(|| Error::NotFound {
            path: root().join(relative),
            kind: kind.into(),
            name: name.into(),
        })
}

/// The document of `kind` named `name`, deserialized into `T`.
pub fn load<T: DeserializeOwned>(relative: &str, kind: &str, name: &str) -> Result<T> {
    let doc = find(relative, kind, name)?;
    serde_yaml::from_value(doc).map_err(|source| Error::Parse {
        path: root().join(relative),
        source,
    })
}

/// The value at `path` inside `value`: mapping keys, or list indices written as numbers.
/// Segments are separate because Kubernetes keys contain dots (`app.kubernetes.io/name`).
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| match v {
        Value::Sequence(items) => items.get(key.parse::<usize>().ok()?),
        _ => v.get(*key),
    })
}

/// The string at `path`, if there is one.
pub fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_follows_keys_with_dots_and_list_indices() {
        let doc: Value = serde_yaml::from_str(
            "metadata: {labels: {app.kubernetes.io/name: w}}\nspec: {ports: [{port: 1}, {port: 2}]}",
        )
        .unwrap();
        assert_eq!(
            str_at(&doc, &["metadata", "labels", "app.kubernetes.io/name"]),
            Some("w")
        );
        assert_eq!(
            at(&doc, &["spec", "ports", "1", "port"]).and_then(Value::as_u64),
            Some(2)
        );
        assert_eq!(at(&doc, &["spec", "ports", "2"]), None);
        assert_eq!(at(&doc, &["spec", "missing"]), None);
    }

    #[test]
    fn finds_a_document_by_kind_and_name_in_a_multi_document_file() {
        let role = find("base/rbac.yaml", "Role", "gpuq-worker").unwrap();
        assert_eq!(
            str_at(&role, &["apiVersion"]),
            Some("rbac.authorization.k8s.io/v1")
        );
        let missing = find("base/rbac.yaml", "Role", "nope").unwrap_err();
        assert!(missing.to_string().contains("no Role named nope"), "{missing}");
    }
}
