//! Image allow-lists: the patterns a team's images must match.

/// Whether `image` matches `pattern`, where `*` matches any run of characters (including
/// `/` and `:`): `registry.example/team-a/*` takes every image and tag under that path.
pub fn image_matches(pattern: &str, image: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == image;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !image.starts_with(first) || image.len() < first.len() + last.len() || !image.ends_with(last) {
        return false;
    }
    let mut rest = &image[first.len()..image.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod image_tests {
    use super::*;
    use crate::admission::{AdmissionConfig, TeamLimits};
    use crate::JobSpec;

    #[test]
    fn image_patterns_match_prefixes_suffixes_and_runs() {
        assert!(image_matches(
            "registry.example/team-a/*",
            "registry.example/team-a/train:1.2"
        ));
        assert!(image_matches(
            "registry.example/team-a/*",
            "registry.example/team-a/x/y@sha256:ab"
        ));
        assert!(!image_matches(
            "registry.example/team-a/*",
            "registry.example/team-b/train:1"
        ));
        assert!(!image_matches(
            "registry.example/team-a/*",
            "evil.example/registry.example/team-a/x"
        ));
        assert!(image_matches("*/pytorch:*", "nvcr.io/nvidia/pytorch:24.01"));
        assert!(image_matches("exact:1", "exact:1"));
        assert!(!image_matches("exact:1", "exact:10"));
    }

    #[test]
    fn a_team_with_an_allow_list_may_only_name_its_images() {
        let mut c = AdmissionConfig::default();
        c.teams.insert(
            "a".into(),
            TeamLimits {
                images: vec!["registry.example/team-a/*".into()],
                ..TeamLimits::default()
            },
        );
        let mut spec = JobSpec::new("j", "a", vec![]);
        spec.image = Some("registry.example/team-a/train:3".into());
        assert!(c.check_admissible(&spec).is_ok());
        spec.image = Some("docker.io/library/ubuntu".into());
        let e = c.check_admissible(&spec).unwrap_err().to_string();
        assert!(
            e.contains("image \"docker.io/library/ubuntu\" is not allowed for team \"a\""),
            "{e}"
        );
        // Another team, or no image at all, is not checked.
        spec.team = "b".into();
        assert!(c.check_admissible(&spec).is_ok());
        spec.team = "a".into();
        spec.image = None;
        spec.command = vec!["true".into()];
        assert!(c.check_admissible(&spec).is_ok());
    }
}
