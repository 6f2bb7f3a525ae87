//! Job specs: what a client submits, with validation that names the offending field.

use crate::{JobId, Priority, SpecError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

mod batch;
pub use batch::parse_batch;

/// Default per-attempt time limit: long enough for real training, short enough to catch hangs.
const DEFAULT_TIMEOUT_SECS: u64 = 24 * 3600;

/// Longest job name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Most environment entries a spec may carry.
pub const MAX_ENV_ENTRIES: usize = 1024;
/// Most secret references one job may hold.
pub const MAX_SECRET_ENV: usize = 64;
/// Largest spec, as JSON: specs live in Redis and are read on every claim.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;

/// A training job as submitted. Unknown fields are rejected when a spec is submitted
/// ([`JobSpec::from_json`]), so typos do not pass silently; a spec read back from storage
/// is read tolerantly ([`JobSpec::from_stored`]), since a newer writer may have added
/// fields this version does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSpec {
    /// Client-chosen id (makes enqueue idempotent); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"))]
    pub id: Option<JobId>,
    /// Human-readable name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub name: String,
    /// Owning team; budgets and reports group by it.
    #[serde(default = "default_team")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9._-]{1,63}$", default = "default")
    )]
    pub team: String,
    /// Model family (e.g. `resnet50`, `llama-7b`); duration estimates group by it.
    #[serde(default = "default_model_type")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,63}$"))]
    pub model_type: String,
    /// Strict scheduling priority.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = r"^(p0|p1|p2|urgent|normal|background)$", default = "normal"))]
    pub priority: Priority,
    /// Container image, used by the Kubernetes launcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The argv to run (never a shell string). Required unless an image supplies the entrypoint.
    #[serde(default)]
    pub command: Vec<String>,
    /// Extra environment for the job's process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables whose values are secrets of the job's team, named `SECRET/KEY` rather
    /// than written into the spec (see [`SecretRef`]): the launcher fills them in.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub secret_env: BTreeMap<String, SecretRef>,
    /// What the job needs to run.
    #[serde(default)]
    pub resources: Resources,
    /// Training epochs (at least 1).
    #[serde(default = "one")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, default = 1))]
    pub epochs: u32,
    /// Training batch size (at least 1).
    #[serde(default = "default_batch_size")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub batch_size: u32,
    /// Attempts before the job is dead-lettered (1 = no retries).
    #[serde(default = "default_max_attempts")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_attempts: u32,
    /// Per-attempt time limit in seconds; an attempt running longer is killed and counts as failed.
    #[serde(default = "default_timeout")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub timeout_secs: u64,
    /// Earliest start, in ms since the Unix epoch; until then the job waits as `deferred`
    /// (`enqueue --off-peak` sets it to the next off-peak window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// Free-form labels (experiment, owner, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The group the job belongs to (`batch --group`): a group may cap how many of its
    /// jobs run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,63}$"))]
    pub group: Option<String>,
    /// Most jobs of `group` running at once (`batch --max-running`; 1 runs the group one
    /// job after another). The latest enqueue that gives it sets it for the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub group_max_running: Option<u32>,
    /// `false` keeps the job from being preempted (see [`crate::preemption`]): allowed for
    /// urgent jobs, and for the teams the admission configuration names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptible: Option<bool>,
    /// Seconds the job gets to checkpoint and exit after SIGTERM when it is preempted
    /// (default: the configuration's `preemption.grace_secs`, 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt_grace_secs: Option<u64>,
}

/// A secret of the job's team, `SECRET/KEY`: on Kubernetes the key `KEY` of the Secret
/// `gpuq.TEAM.SECRET` in the worker's namespace, locally the file
/// `SECRETS_DIR/TEAM/SECRET/KEY` on the worker (`--secrets-dir`). A job can only name its
/// own team's secrets, and their values never enter the spec, Redis or the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretRef {
    /// The secret: lowercase letters, digits and `-`, 1 to 63 of them.
    pub secret: String,
    /// The key within it: letters, digits, `-`, `_` and `.`, not only dots.
    pub key: String,
}

impl TryFrom<String> for SecretRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let Some((secret, key)) = s.split_once('/') else {
            return Err(format!("secret reference {s:?} must be SECRET/KEY"));
        };
        let secret_ok = !secret.is_empty()
            && secret.len() <= 63
            && secret
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !secret.starts_with('-')
            && !secret.ends_with('-');
        if !secret_ok {
            return Err(format!(
                "secret {secret:?} in {s:?} must be 1 to 63 lowercase letters, digits or '-'"
            ));
        }
        let key_ok = !key.is_empty()
            && key.len() <= 253
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !key.chars().all(|c| c == '.');
        if !key_ok {
            return Err(format!(
                "key {key:?} in {s:?} must be letters, digits, '-', '_' or '.' (not only dots)"
            ));
        }
        Ok(SecretRef {
            secret: secret.to_string(),
            key: key.to_string(),
        })
    }
}

impl From<SecretRef> for String {
    fn from(r: SecretRef) -> String {
        format!("{}/{}", r.secret, r.key)
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.secret, self.key)
    }
}

/// The team of a spec that names none.
pub const DEFAULT_TEAM: &str = "default";

fn default_team() -> String {
    DEFAULT_TEAM.into()
}
fn default_model_type() -> String {
    "generic".into()
}
fn one() -> u32 {
    1
}
fn default_batch_size() -> u32 {
    32
}
fn default_max_attempts() -> u32 {
    3
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

/// Resources one attempt needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    /// Number of GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// GPU model (e.g. `a100`, `h100`); scheduled through a node selector on Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,63}$"))]
    pub gpu_type: Option<String>,
    /// CPU cores (fractions allowed).
    #[serde(default = "default_cpu")]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0, default = 1.0))]
    pub cpu: f64,
    /// Memory, written like Kubernetes quantities: `512Mi`, `16Gi`.
    #[serde(default = "default_memory")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "16Gi", default = "4Gi"))]
    pub memory: Memory,
}

fn default_cpu() -> f64 {
    1.0
}
fn default_memory() -> Memory {
    Memory(4 << 30)
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            gpus: 0,
            gpu_type: None,
            cpu: default_cpu(),
            memory: default_memory(),
        }
    }
}

/// An amount of memory in bytes, read and written as a Kubernetes-style quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Memory(pub u64);

impl std::str::FromStr for Memory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a memory size like 512Mi or 16Gi"))?;
        let mult: u64 = match unit {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            "K" | "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            _ => {
                return Err(format!(
                    "{s:?} has unknown unit {unit:?}; use Ki, Mi, Gi, Ti, K, M, G or T"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Memory)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
            let m = 1u64 << shift;
            if self.0 >= m && self.0 % m == 0 {
                return write!(f, "{}{unit}", self.0 / m);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for Memory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(Memory(b)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl JobSpec {
    /// A spec with defaults for everything but name, team and command.
    pub fn new(name: impl Into<String>, team: impl Into<String>, command: Vec<String>) -> Self {
        JobSpec {
            id: None,
            name: name.into(),
            team: team.into(),
            model_type: default_model_type(),
            priority: Priority::default(),
            image: None,
            command,
            env: BTreeMap::new(),
            resources: Resources::default(),
            epochs: 1,
            batch_size: default_batch_size(),
            max_attempts: default_max_attempts(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            not_before: None,
            labels: BTreeMap::new(),
            group: None,
            group_max_running: None,
            preemptible: None,
            preempt_grace_secs: None,
            secret_env: BTreeMap::new(),
        }
    }

    /// Parses one submitted spec from JSON and validates it strictly: an unknown field
    /// is an error naming it.
    pub fn from_json(json: &str) -> Result<JobSpec, SpecError> {
        if json.len() > MAX_SPEC_BYTES {
            return Err(SpecError::new(
                "",
                format!(
                    "the spec is {} bytes of JSON, more than {MAX_SPEC_BYTES}",
                    json.len()
                ),
            ));
        }
        // Read without tracking the path first: only a spec that fails is read again
        // for the path of what is wrong (the tracking cost a batch a third of its parse).
        let mut unknown = Vec::new();
        let mut track = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = &mut serde_json::Deserializer::from_str(json);
        let spec = match serde_ignored::deserialize::<_, _, JobSpec>(de, &mut track) {
            Ok(spec) => spec,
            Err(_) => {
                let de = &mut serde_json::Deserializer::from_str(json);
                let mut ignore = |_: serde_ignored::Path<'_>| {};
                let tracked = serde_ignored::Deserializer::new(de, &mut ignore);
                return Err(match serde_path_to_error::deserialize::<_, JobSpec>(tracked) {
                    Err(e) => {
                        let field = e.path().to_string();
                        let field = if field == "." { String::new() } else { field };
                        SpecError::new(field, strip_position(&e.inner().to_string()))
                    }
                    Ok(_) => SpecError::new("", "the spec cannot be read"),
                });
            }
        };
        if let Some(field) = unknown.into_iter().next() {
            let name = field.rsplit('.').next().unwrap_or(&field).to_string();
            return Err(SpecError::new(field, format!("unknown field `{name}`")));
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a spec back from Redis or the store. Tolerant by design: fields this version
    /// does not know (written by a newer one during a rolling upgrade) are ignored, and
    /// the spec is not validated again (it was when it was submitted). Specs carry no
    /// version marker of their own: the first layout is the only one, and later ones
    /// may only add fields with defaults.
    pub fn from_stored(json: &str) -> Result<JobSpec, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    /// A copy for display: values of environment variables whose names suggest a secret
    /// ([`crate::redact::is_secret_name`]) become `***`, and a password inside any other
    /// value that is a URL (`scheme://user:PASSWORD@host`) too. The job itself still gets
    /// the real values.
    pub fn redacted(&self) -> JobSpec {
        let mut copy = self.clone();
        for (k, v) in copy.env.iter_mut() {
            if crate::redact::is_secret_name(k) {
                *v = crate::redact::MASK.into();
            } else {
                *v = crate::redact::mask(v, &[]);
            }
        }
        copy
    }

    /// The values of this spec's secret-looking environment variables: what the worker
    /// masks in the job's output.
    pub fn secret_values(&self) -> Vec<String> {
        self.env
            .iter()
            .filter(|(k, _)| crate::redact::is_secret_name(k))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Checks the values serde cannot: ranges, emptiness, safe names.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field: &str, msg: String| Err(SpecError::new(field, msg));
        if self.name.trim().is_empty() {
            return bad("name", "must not be empty".into());
        }
        let chars = self.name.chars().count();
        if chars > MAX_NAME_CHARS {
            return bad(
                "name",
                format!("must be at most {MAX_NAME_CHARS} characters, got {chars}"),
            );
        }
        if self.name.chars().any(char::is_control) {
            return bad("name", "must not contain control characters".into());
        }
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return bad(&format!("command[{i}]"), "must not contain a NUL byte".into());
        }
        if self.env.len() > MAX_ENV_ENTRIES {
            return bad(
                "env",
                format!(
                    "must have at most {MAX_ENV_ENTRIES} entries, got {}",
                    self.env.len()
                ),
            );
        }
        if let Some(k) = self.env.iter().find(|(_, v)| v.contains('\0')).map(|(k, _)| k) {
            return bad(&format!("env.{k}"), "must not contain a NUL byte".into());
        }
        if self.secret_env.len() > MAX_SECRET_ENV {
            return bad(
                "secret_env",
                format!(
                    "must have at most {MAX_SECRET_ENV} entries, got {}",
                    self.secret_env.len()
                ),
            );
        }
        for k in self.secret_env.keys() {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return bad(
                    &format!("secret_env.{k}"),
                    "must be a variable name (letters, digits, '_')".into(),
                );
            }
            if self.env.contains_key(k) {
                return bad(&format!("secret_env.{k}"), "is also in env: give it once".into());
            }
        }
        check_name("team", &self.team)?;
        check_name("model_type", &self.model_type)?;
        if let Some(g) = &self.group {
            check_name("group", g)?;
        }
        match (self.group_max_running, &self.group) {
            (Some(0), _) => return bad("group_max_running", "must be at least 1".into()),
            (Some(_), None) => return bad("group_max_running", "needs a group (give `group` too)".into()),
            _ => {}
        }
        if self.command.is_empty() && self.image.is_none() {
            return bad(
                "command",
                "must not be empty (give the argv to run, or an image)".into(),
            );
        }
        if self.command.first().is_some_and(|c| c.is_empty()) {
            return bad("command", "the program (first element) must not be empty".into());
        }
        if self.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
            return bad("image", "must not be empty when given".into());
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if !(1..=100).contains(&self.max_attempts) {
            return bad(
                "max_attempts",
                format!("must be between 1 and 100, got {}", self.max_attempts),
            );
        }
        if self.timeout_secs == 0 {
            return bad("timeout_secs", "must be at least 1 second".into());
        }
        let r = &self.resources;
        if !(r.cpu.is_finite() && r.cpu > 0.0 && r.cpu <= 1024.0) {
            return bad(
                "resources.cpu",
                format!("must be a number of cores in (0, 1024], got {}", r.cpu),
            );
        }
        if r.gpus > 64 {
            return bad("resources.gpus", format!("must be at most 64, got {}", r.gpus));
        }
        if r.memory.0 == 0 {
            return bad("resources.memory", "must be more than 0".into());
        }
        if let Some(t) = &r.gpu_type {
            check_name("resources.gpu_type", t)?;
        }
        for key in self.env.keys() {
            let ok = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return bad("env", format!("{key:?} is not a valid environment variable name"));
            }
        }
        for key in self.labels.keys() {
            if key.is_empty() || key.len() > 63 {
                return bad("labels", format!("label key {key:?} must be 1 to 63 characters"));
            }
        }
        Ok(())
    }
}

/// Whether `value` is 1 to 63 letters, digits, '-', '_' or '.': the rule for every name
/// that ends up in Kubernetes labels, metric labels or Redis keys (teams, model and GPU
/// types, pools, groups, cohorts). It excludes the ':' and '|' the scripts separate with.
pub fn is_safe_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Team, model type and GPU type end up in Kubernetes labels and metric labels: keep them tame.
fn check_name(field: &str, value: &str) -> Result<(), SpecError> {
    if is_safe_name(value) {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("{value:?} must be 1 to 63 letters, digits, '-', '_' or '.'"),
        ))
    }
}

/// serde_json appends "at line 1 column 7"; in a batch we report the line ourselves.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"name":"r50","team":"vision","command":["python","train.py"],"epochs":3}"#;

    #[test]
    fn parses_with_defaults() {
        let s = JobSpec::from_json(GOOD).unwrap();
        assert_eq!(s.priority, Priority::Normal);
        assert_eq!(s.resources.memory, Memory(4 << 30));
        assert_eq!(s.max_attempts, 3);
        assert_eq!(s.epochs, 3);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"name":"a","command":["x"],"priority":"p7"}"#, "priority"),
            (r#"{"name":"a","command":["x"],"epochs":0}"#, "epochs"),
            (r#"{"name":"a","command":["x"],"epochs":-1}"#, "epochs"),
            (r#"{"name":"a","command":[]}"#, "command"),
            (r#"{"name":"a","command":["x"],"colour":"red"}"#, "colour"),
            (
                r#"{"name":"a","command":["x"],"resources":{"gpus":1,"cpu":-2}}"#,
                "resources.cpu",
            ),
            (
                r#"{"name":"a","command":["x"],"resources":{"memory":"12Qi"}}"#,
                "resources.memory",
            ),
            (r#"{"name":"a","command":["x"],"id":"a b"}"#, "id"),
        ];
        for (json, field) in cases {
            let e = JobSpec::from_json(json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
        let e = JobSpec::from_json(r#"{"name":"a","command":["x"],"colour":"red"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let e = JobSpec::from_json("{not json").unwrap_err();
        assert!(e.to_string().starts_with("invalid job spec"), "{e}");
    }

    #[test]
    fn bounded_input_is_refused_naming_the_field() {
        let long = "n".repeat(MAX_NAME_CHARS + 1);
        let env: Vec<String> = (0..=MAX_ENV_ENTRIES).map(|i| format!(r#""V{i}":"x""#)).collect();
        let cases = [
            (
                format!(r#"{{"name":"{long}","command":["x"]}}"#),
                "name",
                "at most 256 characters",
            ),
            (
                r#"{"name":"a\tb","command":["x"]}"#.to_string(),
                "name",
                "control characters",
            ),
            (
                r#"{"name":"a","command":["x","a\u0000b"]}"#.to_string(),
                "command[1]",
                "NUL",
            ),
            (
                r#"{"name":"a","command":["x"],"env":{"A":"\u0000"}}"#.to_string(),
                "env.A",
                "NUL",
            ),
            (
                format!(r#"{{"name":"a","command":["x"],"env":{{{}}}}}"#, env.join(",")),
                "env",
                "at most 1024 entries",
            ),
            (
                r#"{"name":"a","command":["x"],"id":".."}"#.to_string(),
                "id",
                "starts with '.'",
            ),
        ];
        for (json, field, why) in cases {
            let e = JobSpec::from_json(&json).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(why), "{e}");
        }
        let huge = format!(
            r#"{{"name":"a","command":["x"],"labels":{{"k":"{}"}}}}"#,
            "v".repeat(MAX_SPEC_BYTES)
        );
        let e = JobSpec::from_json(&huge).unwrap_err();
        assert!(e.message.contains("more than 65536"), "{e}");
        assert!(JobSpec::from_json(&format!(r#"{{"name":"{}","command":["x"]}}"#, "n".repeat(256))).is_ok());
    }

    #[test]
    fn redacts_secret_looking_env() {
        let mut s = JobSpec::from_json(GOOD).unwrap();
        s.env.insert("HF_TOKEN".into(), "abc".into());
        s.env.insert("db_password".into(), "pw".into());
        s.env.insert("LR".into(), "0.1".into());
        let r = s.redacted();
        assert_eq!(r.env["HF_TOKEN"], "***");
        assert_eq!(r.env["db_password"], "***");
        assert_eq!(r.env["LR"], "0.1");
        assert_eq!(s.env["HF_TOKEN"], "abc", "the original keeps the real value");
    }

    #[test]
    fn memory_quantities() {
        assert_eq!("16Gi".parse::<Memory>(), Ok(Memory(16 << 30)));
        assert_eq!("512Mi".parse::<Memory>(), Ok(Memory(512 << 20)));
        assert_eq!("1G".parse::<Memory>(), Ok(Memory(1_000_000_000)));
        assert!("lots".parse::<Memory>().is_err());
        assert_eq!(Memory(16 << 30).to_string(), "16Gi");
        assert_eq!(Memory(1_000_000_000).to_string(), "1000000000");
    }
}
