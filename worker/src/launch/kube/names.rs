//! Names and labels of the Kubernetes objects of an attempt.
//!
//! A Job's name is derived from the job id and the attempt alone, so a worker that picks
//! up a redelivered attempt computes the same name and finds the Job its predecessor
//! created. Job ids allow characters and lengths that Kubernetes names and label values
//! do not, so both are sanitized, and a short hash of the full id keeps two ids that
//! sanitize alike apart.

use common::JobId;

/// Label keys and values that identify gpuq's objects. Values are label-safe.
pub(crate) mod keys {
    pub(crate) const APP_NAME: &str = "app.kubernetes.io/name";
    pub(crate) const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub(crate) const INSTANCE: &str = "app.kubernetes.io/instance";
    pub(crate) const JOB_ID: &str = "gpuq.io/job-id";
    pub(crate) const ATTEMPT: &str = "gpuq.io/attempt";
    pub(crate) const TEAM: &str = "gpuq.io/team";
    pub(crate) const PRIORITY: &str = "gpuq.io/priority";
    pub(crate) const MODEL_TYPE: &str = "gpuq.io/model-type";
    pub(crate) const NAME: &str = "gpuq.io/name";
    /// Set by the Job controller on the pods of a Job (Kubernetes 1.27 and later).
    pub(crate) const POD_JOB_NAME: &str = "batch.kubernetes.io/job-name";

    pub(crate) const APP_NAME_VALUE: &str = "gpuq-training";
    pub(crate) const MANAGED_BY_VALUE: &str = "gpuq";
}

/// Annotations carry what labels cannot hold exactly (the full id and name).
pub(crate) mod annotations {
    pub(crate) const JOB_ID: &str = "gpuq.io/job-id";
    pub(crate) const NAME: &str = "gpuq.io/name";
}

/// Longest Kubernetes object name that is also valid as a label value and a DNS label.
const MAX_NAME: usize = 63;
/// Hex digits of the id hash in names and label values.
const HASH_LEN: usize = 8;

/// The Job of attempt `attempt` of job `id`:
/// `gpuq-<sanitized id prefix>-<8 hex digits of hash(id)>-a<attempt>`, a DNS-1123 label
/// of at most 63 characters. The prefix is the id lowercased, with every character outside
/// `[a-z0-9]` turned into `-`, runs of `-` collapsed and cut to fit.
pub(crate) fn job_name(id: &JobId, attempt: u32) -> String {
    let suffix = format!("-{}-a{attempt}", short_hash(id.as_str()));
    let room = MAX_NAME - "gpuq-".len() - suffix.len();
    let prefix = dns_prefix(id.as_str(), room);
    if prefix.is_empty() {
        format!("gpuq{suffix}")
    } else {
        format!("gpuq-{prefix}{suffix}")
    }
}

/// The value of the `gpuq.io/job-id` label: the id itself when it is a valid label value,
/// otherwise a sanitized prefix plus the id's hash. Always paired with the full id in the
/// `gpuq.io/job-id` annotation, which is what adoption checks.
pub(crate) fn job_id_label(id: &JobId) -> String {
    let id = id.as_str();
    if is_label_value(id) {
        return id.to_string();
    }
    let hash = short_hash(id);
    let prefix = label_value(id, MAX_NAME - HASH_LEN - 1);
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Turns free text into a label value: characters outside `[A-Za-z0-9._-]` become `-`,
/// the result is cut to `max` characters and trimmed to start and end alphanumeric. May be
/// empty, which Kubernetes accepts but callers usually skip.
pub(crate) fn label_value(text: &str, max: usize) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(max.min(MAX_NAME))
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Whether `s` is a non-empty label value exactly as it is.
pub(crate) fn is_label_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME && label_value(s, MAX_NAME) == s
}

/// A directory name for the job's checkpoints inside the checkpoint volume. Ids are
/// path-safe except `.` and `..`, which would escape the job's directory.
pub(crate) fn checkpoint_dir_name(id: &JobId) -> String {
    path_segment(id.as_str())
}

/// `s` as one safe path segment: names are already limited to letters, digits, `-`,
/// `_` and `.`, so only a name made of dots (`.`, `..`) needs replacing.
pub(crate) fn path_segment(s: &str) -> String {
    if s.is_empty() || s.chars().all(|c| c == '.') || s.contains('/') {
        format!("id-{}", short_hash(s))
    } else {
        s.to_string()
    }
}

fn dns_prefix(id: &str, max: usize) -> String {
    let mut out = String::with_capacity(max);
    for c in id.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        if out.len() == max {
            break;
        }
        out.push(c);
    }
    out.trim_end_matches('-').to_string()
}

/// FNV-1a (64 bit) of `s`, as its low 32 bits in hex: stable across builds, platforms
/// and releases, which `std`'s hasher does not promise.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:0width$x}", h & 0xffff_ffff, width = HASH_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> JobId {
        s.parse().unwrap()
    }

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn job_names_are_deterministic_dns_labels() {
        let n = job_name(&id("ft-3-seed1"), 2);
        assert_eq!(n, job_name(&id("ft-3-seed1"), 2));
        assert!(n.starts_with("gpuq-ft-3-seed1-"), "{n}");
        assert!(n.ends_with("-a2"), "{n}");
        assert_ne!(n, job_name(&id("ft-3-seed1"), 3));
        // Ids that sanitize alike still get different names.
        assert_ne!(job_name(&id("Run_1"), 1), job_name(&id("run-1"), 1));
        for raw in [
            "ft-3-seed1",
            "UPPER.case_and.dots",
            "---",
            "x...",
            &"x".repeat(128),
            "0195f3c2-7d1e-7cc0-9a53-1d2b3c4d5e6f",
        ] {
            for attempt in [1, 42, u32::MAX] {
                let n = job_name(&id(raw), attempt);
                assert!(is_dns_label(&n), "{raw} -> {n}");
            }
        }
        assert_eq!(job_name(&id("---"), 1).len(), "gpuq-".len() + 8 + 3);
    }

    #[test]
    fn label_values_are_sanitized() {
        assert_eq!(label_value("vision", 63), "vision");
        assert_eq!(label_value("-team_", 63), "team");
        assert_eq!(label_value("resnet 50 / ft", 63), "resnet-50---ft");
        assert_eq!(label_value("é", 63), "");
        assert_eq!(label_value(&"a".repeat(100), 63).len(), 63);
        assert!(is_label_value("p0"));
        assert!(!is_label_value("-x"));
    }

    #[test]
    fn job_id_labels_keep_valid_ids_and_hash_the_rest() {
        assert_eq!(job_id_label(&id("ft-3-seed1")), "ft-3-seed1");
        let long = job_id_label(&id(&"y".repeat(100)));
        assert!(is_label_value(&long) && long.len() <= 63, "{long}");
        assert_ne!(long, job_id_label(&id(&"y".repeat(101))));
        let dots = job_id_label(&id("x..."));
        assert!(is_label_value(&dots), "{dots}");
    }

    #[test]
    fn checkpoint_dirs_never_escape() {
        assert_eq!(checkpoint_dir_name(&id("a.b")), "a.b");
        // Ids may not start with '.' at all now; the sanitizer still guards the rest.
        assert!("..".parse::<JobId>().is_err());
        assert!(checkpoint_dir_name(&id("x..")).starts_with("x.."));
    }
}
