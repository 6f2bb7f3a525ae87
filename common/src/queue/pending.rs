//! Pending records: how a queued job that a batch enqueued waits in Redis before anything
//! changes it (`lua/lib.lua` writes and materializes them; this is the reading side).
//!
//! One HSET of a chunk's records into `{ns}:pending` costs Redis about a third of what a
//! hash per job does, and batch enqueue is bounded by Redis's time. Readers that change
//! nothing read the record where it is, so a job reads the same with or without its hash.
//! A record is `@TOKEN US spec`, its group's shared head in `{ns}:pending:heads`; one of
//! the earlier version holds its head itself (the whole form, which [`decode`] reads).

use redis::aio::ConnectionLike;
use std::borrow::Cow;
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

/// How many times a read goes back for jobs whose record's head went between its two
/// reads (each time, a claim took the last job of a group and gave it its hash).
pub(crate) const READ_TRIES: usize = 5;

/// A record with a shared head: its token and its spec.
fn shared(record: &str) -> Option<(&str, &str)> {
    record.strip_prefix('@')?.split_once(SEP)
}

/// The heads of the records with shared heads among `records`, by token, in one HMGET.
async fn heads<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    records: &[Option<String>],
) -> Result<HashMap<String, String>> {
    let mut tokens: Vec<&str> = records
        .iter()
        .flatten()
        .filter_map(|r| Some(shared(r)?.0))
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    if tokens.is_empty() {
        return Ok(HashMap::new());
    }
    let values: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(keys.pending_heads())
        .arg(&tokens)
        .query_async(conn)
        .await?;
    Ok(tokens
        .into_iter()
        .zip(values)
        .filter_map(|(t, v)| Some((t.to_owned(), v?)))
        .collect())
}

/// A record in its whole form (head, then spec); `None` when its head is gone.
fn whole<'a>(record: &'a str, heads: &HashMap<String, String>) -> Option<Cow<'a, str>> {
    match shared(record) {
        None => Some(Cow::Borrowed(record)),
        Some((token, spec)) => Some(Cow::Owned(format!("{}{spec}", heads.get(token)?))),
    }
}

/// What a read found of a job's record.
pub(crate) enum Found {
    /// The record in its whole form, or None when the job has none.
    Record(Option<String>),
    /// Its head went with the last record of its group between the two reads: a claim
    /// gave the job its hash, which reading the job again finds.
    Moved,
}

/// `records` (read with HGET of `{ns}:pending`) in their whole form, their shared heads
/// read in one HMGET.
pub(crate) async fn resolve<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    records: Vec<Option<String>>,
) -> Result<Vec<Found>> {
    let heads = heads(conn, keys, &records).await?;
    Ok(records
        .into_iter()
        .map(|r| match r {
            None => Found::Record(None),
            Some(r) => match whole(&r, &heads) {
                None => Found::Moved,
                Some(Cow::Borrowed(_)) => Found::Record(Some(r)),
                Some(Cow::Owned(w)) => Found::Record(Some(w)),
            },
        })
        .collect())
}

/// The hashes of many jobs, as HGETALL would give them once each job has its own: a
/// job's record and its hash are read in that order, in one pipeline, so a job that a
/// claim materializes between the two reads is found in the second; a job whose record
/// moved is read again.
pub(crate) async fn hashes<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    ids: &[String],
) -> Result<Vec<HashMap<String, String>>> {
    let mut out: Vec<HashMap<String, String>> = vec![HashMap::new(); ids.len()];
    let mut todo: Vec<usize> = (0..ids.len()).collect();
    for attempt in 1..=READ_TRIES {
        if todo.is_empty() {
            break;
        }
        let mut pipe = redis::pipe();
        for &k in &todo {
            pipe.hget(keys.pending(), &ids[k]).hgetall(keys.job(&ids[k]));
        }
        let replies: Vec<(Option<String>, HashMap<String, String>)> = pipe.query_async(conn).await?;
        let (records, hashes): (Vec<_>, Vec<_>) = replies.into_iter().unzip();
        let found = resolve(conn, keys, records).await?;
        let mut again = Vec::new();
        for ((k, found), hash) in todo.into_iter().zip(found).zip(hashes) {
            match found {
                Found::Moved if attempt < READ_TRIES => again.push(k),
                Found::Moved => out[k] = hash,
                Found::Record(record) => out[k] = merged(record, hash),
            }
        }
        todo = again;
    }
    Ok(out)
}

/// The spec JSON of many jobs (None for those Redis lacks), read as [`hashes`] reads;
/// a record's spec needs no head.
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
        .map(|(record, spec)| spec.or_else(|| spec_of(&record?)))
        .collect())
}

/// A record's spec, in either form.
fn spec_of(record: &str) -> Option<String> {
    match shared(record) {
        Some((_, spec)) => Some(spec.to_owned()),
        None => decode(record)?.remove("spec"),
    }
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

    #[test]
    fn a_record_with_a_shared_head_reads_as_the_whole_one() {
        let head = "p0\u{1f}3\u{1f}1000\u{1f}1000123\u{1f}alice\u{1f}\u{1f}1\u{1f}";
        let heads = HashMap::from([("0123abcd".to_owned(), head.to_owned())]);
        let rec = "@0123abcd\u{1f}{\"name\":\"x\u{1f}y\"}";
        let w = whole(rec, &heads).unwrap();
        let h = decode(&w).unwrap();
        assert_eq!(h["priority"], "p0");
        assert_eq!((h["by"].as_str(), h["idem"].as_str()), ("alice", "1"));
        assert_eq!(h["spec"], "{\"name\":\"x\u{1f}y\"}");
        assert_eq!(spec_of(rec).unwrap(), h["spec"], "the spec needs no head");
        assert!(whole("@gone\u{1f}{}", &heads).is_none(), "a head that went");
        let inline = format!("{head}{{}}");
        assert_eq!(
            whole(&inline, &heads).unwrap(),
            inline,
            "the earlier form reads as it is"
        );
    }
}
