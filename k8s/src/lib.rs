//! Tests and models for the manifests in this folder.
