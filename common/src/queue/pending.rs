//! Pending records: how a queued job that a batch enqueued waits in Redis before anything
//! changes it (`lua/lib.lua` writes and materializes them; this is the reading side).
//!
//! One HSET of a chunk's records into `{ns}:pending` costs Redis about a third of what a
//! hash per job does, and batch enqueue is bounded by Redis's time. Readers that change
//! nothing read the record where it is, so a job reads the same with or without its hash.

use redis::aio::ConnectionLike;
use std::collections::HashMap;

use super::Keys;
use crate::Result;

/// The fields a record holds before the spec, in order (`RECORD` in lib.lua).
const FIELDS: [&str; 7] = [
    "priority",
    "attempt_limit",
    "enqueued_at",
    "enqueued_us",
    "by",
    "charge",
    "idem",
];

/// The separator between a record's fields (ASCII unit separator): none of the fields
/// before the spec can hold it, and the spec comes last.
const SEP: char = '\u{1f}';

/// The job hash's fields a record stands for: what `materialize` in lib.lua writes.
/// `None` for a value that is not a record, which lib.lua does not read either (a claim
/// sets such a job aside).
pub(crate) fn decode(record: &str) -> Option<HashMap<String, String>> {
    let mut hash = HashMap::from([
        ("state".to_owned(), "queued".to_owned()),
        ("attempt".to_owned(), "0".to_owned()),
    ]);
    let mut rest = record;
    for name in FIELDS {
        let (value, tail) = rest.split_once(SEP)?;
        if !value.is_empty() {
            hash.insert(name.to_owned(), value.to_owned());
        }
        rest = tail;
    }
    hash.insert("spec".to_owned(), rest.to_owned());
    Some(hash)
}

/// The hashes of many jobs, as HGETALL would give them once each job has its own: a
/// job's record and its hash are read in that order, in one pipeline, so a job that a
/// claim materializes between the two reads is found in the second.
pub(crate) async fn hashes<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    ids: &[String],
) -> Result<Vec<HashMap<String, String>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.hget(keys.pending(), id).hgetall(keys.job(id));
    }
    let replies: Vec<(Option<String>, HashMap<String, String>)> = pipe.query_async(conn).await?;
    Ok(replies
        .into_iter()
        .map(|(record, hash)| merged(record, hash))
        .collect())
}

/// The spec JSON of many jobs (None for those Redis lacks), read as [`hashes`] reads.
pub(crate) async fn specs<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    ids: &[String],
) -> Result<Vec<Option<String>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.hget(keys.pending(), id).hget(keys.job(id), "spec");
    }
    let replies: Vec<(Option<String>, Option<String>)> = pipe.query_async(conn).await?;
    Ok(replies
        .into_iter()
        .map(|(record, spec)| spec.or_else(|| decode(&record?)?.remove("spec")))
        .collect())
}

/// A job's hash with its record's fields under it: fields the hash holds win, as when a
/// script materializes the record (nothing else writes a hash while a record waits).
pub(crate) fn merged(record: Option<String>, hash: HashMap<String, String>) -> HashMap<String, String> {
    match record.as_deref().and_then(decode) {
        None => hash,
        Some(mut out) => {
            out.extend(hash);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_the_fields_of_the_hash() {
        let rec =
            "p0\u{1f}3\u{1f}1000\u{1f}1000123\u{1f}\u{1f}pool=a;team=t\u{1f}\u{1f}{\"name\":\"x\u{1f}y\"}";
        let h = decode(rec).unwrap();
        assert_eq!(h["state"], "queued");
        assert_eq!(h["attempt"], "0");
        assert_eq!(h["priority"], "p0");
        assert_eq!(h["attempt_limit"], "3");
        assert_eq!(h["enqueued_at"], "1000");
        assert_eq!(h["enqueued_us"], "1000123");
        assert_eq!(h["charge"], "pool=a;team=t");
        assert!(!h.contains_key("by") && !h.contains_key("idem"), "{h:?}");
        assert_eq!(
            h["spec"], "{\"name\":\"x\u{1f}y\"}",
            "the spec, last, may hold the separator"
        );
        assert_eq!(decode("p0\u{1f}3\u{1f}{}"), None, "too few fields");
    }
}
