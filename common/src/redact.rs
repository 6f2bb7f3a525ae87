//! Masking secrets out of what gpuq shows and stores: spec env values under secret-looking
//! names, credentials inside URLs, and a job's secret values wherever its output repeats
//! them. Applied by `show` and `list` (specs), and by the worker to job output before it is
//! stored in Redis or written to the worker's debug log (so `logs` never sees them either).

/// What replaces a secret.
pub const MASK: &str = "***";

/// True for environment variable names that suggest a secret: containing TOKEN, SECRET,
/// PASSWORD, PASSWD, KEY, CREDENTIAL or AUTH, or ending in `_PASS` or `_PAT`.
pub fn is_secret_name(name: &str) -> bool {
    const MARKERS: [&str; 7] = [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "KEY",
        "CREDENTIAL",
        "AUTH",
    ];
    let upper = name.to_ascii_uppercase();
    MARKERS.iter().any(|m| upper.contains(m))
        || upper.ends_with("_PASS")
        || upper.ends_with("_PAT")
        || upper == "PASS"
}

/// Masks the password of every URL in `text` (`scheme://user:PASSWORD@host` becomes
/// `scheme://user:***@host`), and every occurrence of the given secret values (those of
/// four characters or more: shorter ones would mask ordinary text).
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = mask_url_passwords(text);
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; its credentials at '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority
            .rfind('@')
            .and_then(|at| authority[..at].find(':').map(|colon| (colon, at)))
        {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for n in [
            "HF_TOKEN",
            "aws_secret_access_key",
            "DB_PASSWORD",
            "SMTP_PASS",
            "GITHUB_PAT",
            "GOOGLE_CREDENTIALS",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["LEARNING_RATE", "PATH", "PATCH_SIZE", "PASSES"] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn masks_url_passwords_and_secret_values() {
        assert_eq!(
            mask("connecting to postgres://gpuq:hunter22@db:5432/x now", &[]),
            "connecting to postgres://gpuq:***@db:5432/x now"
        );
        assert_eq!(
            mask("redis://:pw@h and https://h/a@b", &[]),
            "redis://:***@h and https://h/a@b"
        );
        assert_eq!(
            mask("token tok-sup3r in use", &["tok-sup3r".into(), "x".into()]),
            "token *** in use"
        );
        assert_eq!(mask("plain://host/path", &[]), "plain://host/path");
    }
}
