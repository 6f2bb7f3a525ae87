//! The batch file: a JSON array of specs, or JSON lines, read whole (every spec checked,
//! ids unique) before anything is enqueued, with the line of the first problem.

use super::{strip_position, JobSpec};
use crate::{JobId, SpecError};
use serde_json::value::RawValue;
use std::collections::HashMap;

/// Parses a batch: a JSON array of specs, or JSON lines (one spec per line, blank lines
/// skipped). Every spec is validated, and ids must be unique within the batch; the first
/// problem is returned with its line number, so nothing is enqueued from a bad batch.
pub fn parse_batch(input: &str) -> Result<Vec<JobSpec>, SpecError> {
    let items: Vec<(usize, &str)> = if input.trim_start().starts_with('[') {
        let raw: Vec<&RawValue> = serde_json::from_str(input)
            .map_err(|e| SpecError::new("", strip_position(&e.to_string())).at_line(e.line()))?;
        raw.into_iter()
            .map(|r| {
                let offset = r.get().as_ptr() as usize - input.as_ptr() as usize;
                (line_of(input, offset), r.get())
            })
            .collect()
    } else {
        input
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i + 1, l))
            .collect()
    };
    // Checked where they are: a batch can hold 10^5 specs, each a few hundred bytes.
    let specs = parse_items(&items)?;
    let mut seen: HashMap<JobId, usize> = HashMap::new();
    for (&(line, _), spec) in items.iter().zip(&specs) {
        if let Some(id) = &spec.id {
            if let Some(first) = seen.insert(id.clone(), line) {
                return Err(
                    SpecError::new("id", format!("duplicate id {id} (also on line {first})")).at_line(line),
                );
            }
        }
    }
    if specs.is_empty() {
        return Err(SpecError::new("", "the batch holds no job specs"));
    }
    Ok(specs)
}

/// Batches at least this large are parsed on several threads.
const PARALLEL_FROM: usize = 4096;

/// Parses each item's spec, in order; the error is the first line's that fails. A big
/// batch is split among up to four threads: parsing is most of what the CLI does before
/// the first chunk goes to Redis, and nothing else runs then.
fn parse_items(items: &[(usize, &str)]) -> Result<Vec<JobSpec>, SpecError> {
    let one = |part: &[(usize, &str)]| -> Result<Vec<JobSpec>, SpecError> {
        part.iter()
            .map(|&(line, text)| JobSpec::from_json(text).map_err(|e| e.at_line(line)))
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if items.len() < PARALLEL_FROM || threads < 2 {
        return one(items);
    }
    let per = items.len().div_ceil(threads);
    let parts: Vec<Result<Vec<JobSpec>, SpecError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| scope.spawn(move || one(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    // The first part grows to hold the others (one copy of them, not of it too).
    let mut parts = parts.into_iter();
    let mut specs = parts.next().expect("at least one part")?;
    specs.reserve(items.len() - specs.len());
    for part in parts {
        specs.extend(part?);
    }
    Ok(specs)
}

fn line_of(input: &str, offset: usize) -> usize {
    input.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"name":"r50","team":"vision","command":["python","train.py"],"epochs":3}"#;

    #[test]
    fn batch_reports_the_line_of_the_bad_spec() {
        let input = format!("{GOOD}\n\n{GOOD}\n{{\"name\":\"a\",\"command\":[\"x\"],\"epochs\":0}}\n");
        let e = parse_batch(&input).unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.field, "epochs");
        assert!(e.to_string().starts_with("line 4: "), "{e}");

        let array = format!("[\n  {GOOD},\n  {{\"name\":\"a\",\"command\":[]}}\n]");
        let e = parse_batch(&array).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(3), "command"));
        assert_eq!(parse_batch(&format!("[{GOOD},{GOOD}]")).unwrap().len(), 2);
    }

    #[test]
    fn a_big_batch_parsed_in_parts_keeps_its_order_and_reports_the_first_bad_line() {
        let n = 2 * PARALLEL_FROM + 3;
        let lines: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"name":"job-{i}","command":["x"]}}"#))
            .collect();
        let specs = parse_batch(&lines.join("\n")).unwrap();
        assert_eq!(specs.len(), n);
        assert!(specs
            .iter()
            .enumerate()
            .all(|(i, s)| s.name == format!("job-{i}")));
        let mut bad = lines.clone();
        let (early, late) = (PARALLEL_FROM / 2, n - 2);
        bad[late] = r#"{"name":"late","command":[]}"#.into();
        bad[early] = r#"{"name":"early","command":["x"],"epochs":0}"#.into();
        let e = parse_batch(&bad.join("\n")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(early + 1), "epochs"));
    }

    #[test]
    fn batch_rejects_duplicate_ids() {
        let a = r#"{"id":"same","name":"a","command":["x"]}"#;
        let e = parse_batch(&format!("{a}\n{a}")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "id"));
    }
}
