//! Resumable training state on disk.
//!
//! The queue may kill, preempt or retry a job at any moment, so after every
//! epoch the trainer records its weights and progress. Writes are atomic
//! (temp file in the same directory, fsync, rename), so a crash mid-write
//! leaves either the old checkpoint or the new one, never a torn file.
//! Weights are stored as the hex of their IEEE-754 bits because serde_json's
//! default float parsing does not promise an exact round trip, and a resumed
//! run should continue from exactly the weights the interrupted run had.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of the on-disk format. Bump it when the layout or meaning of a
/// field changes, so old files are ignored rather than misread.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Everything needed to continue a run where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Always [`FORMAT_VERSION`] when written by this build.
    pub(crate) version: u32,
    /// Seed of the dataset and shuffles the weights were trained on.
    pub(crate) seed: u64,
    /// Feature count, i.e. the model shape.
    pub(crate) features: usize,
    /// Dataset size; part of the dataset's identity along with the seed.
    pub(crate) samples: usize,
    /// How many epochs are finished; the next run starts at this + 1.
    pub(crate) epochs_completed: u32,
    /// Model parameters (weights then bias), stored bit-exactly.
    #[serde(with = "f64_bits")]
    pub(crate) params: Vec<f64>,
}

/// Why an existing checkpoint could not be used.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The file exists but could not be read (permissions, I/O error, ...):
    /// worth failing the job over, since overwriting it might lose progress.
    Io(io::Error),
    /// The file is readable but not a usable checkpoint (corrupt, from an
    /// older format, or for a different run): safe to start over.
    Invalid(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl Checkpoint {
    /// Checks that this checkpoint belongs to the run described by the
    /// arguments, so weights trained on one dataset are never silently
    /// continued on another. The error says what differs.
    pub(crate) fn check_compatible(&self, seed: u64, features: usize, samples: usize) -> Result<(), String> {
        if self.seed != seed {
            return Err(format!(
                "it was written for seed {} but this run uses seed {seed}",
                self.seed
            ));
        }
        if self.features != features {
            return Err(format!(
                "it was written for {} features but this build uses {features}",
                self.features
            ));
        }
        if self.samples != samples {
            return Err(format!(
                "it was written for {} samples but this run uses {samples}",
                self.samples
            ));
        }
        if self.params.len() != features + 1 {
            return Err(format!(
                "it holds {} parameters, expected {}",
                self.params.len(),
                features + 1
            ));
        }
        if self.params.iter().any(|p| !p.is_finite()) {
            return Err("it holds non-finite weights".to_owned());
        }
        Ok(())
    }
}

/// Reads the checkpoint at `path`; `Ok(None)` means there is none yet.
pub(crate) fn load(path: &Path) -> Result<Option<Checkpoint>, LoadError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LoadError::Io(e)),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| LoadError::Invalid(format!("it is not valid JSON: {e}")))?;
    // Check the version first so an old file gets a clear message instead
    // of a confusing "missing field" one.
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(LoadError::Invalid(format!(
                "it has format version {v}, this build reads version {FORMAT_VERSION}"
            )))
        }
        None => return Err(LoadError::Invalid("it has no format version".to_owned())),
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| LoadError::Invalid(format!("it is malformed: {e}")))
}

/// Writes `checkpoint` to `path` atomically: readers (and a later resume)
/// see either the previous file or the complete new one.
pub(crate) fn save_atomic(path: &Path, checkpoint: &Checkpoint) -> io::Result<()> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "checkpoint path has no file name"))?;
    // Same directory as the target so the rename cannot cross filesystems;
    // the pid keeps two trainers pointed at one path from sharing a temp file.
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = write_and_sync(&tmp, checkpoint).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir);
    Ok(())
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn write_and_sync(tmp: &Path, checkpoint: &Checkpoint) -> io::Result<()> {
    let mut file = fs::File::create(tmp)?;
    serde_json::to_writer_pretty(&mut file, checkpoint)?;
    file.write_all(b"\n")?;
    // Data must be on disk before the rename makes it visible, or a power
    // loss could leave a complete-looking but empty checkpoint.
    file.sync_all()
}

/// Makes the rename itself durable. Best effort: not every platform or
/// filesystem lets a directory be opened and synced, and the checkpoint is
/// already consistent without it.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Serde adapter storing `Vec<f64>` as 16-digit hex strings of the bits.
mod f64_bits {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(|v| format!("{:016x}", v.to_bits())))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|s| {
                u64::from_str_radix(s, 16)
                    .map(f64::from_bits)
                    .map_err(|_| D::Error::custom(format!("'{s}' is not a hex-encoded f64")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn sample() -> Checkpoint {
        Checkpoint {
            version: FORMAT_VERSION,
            seed: 42,
            features: 3,
            samples: 100,
            epochs_completed: 2,
            params: vec![0.1, -0.0, 1e-300, -123.456_789],
        }
    }

    #[test]
    fn round_trips_bit_exactly_and_leaves_no_temp_file() {
        let dir = TempDir::new("ckpt-roundtrip");
        let path = dir.path().join("checkpoint.json");
        let checkpoint = sample();
        save_atomic(&path, &checkpoint).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded, checkpoint);
        let bits = |c: &Checkpoint| c.params.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&loaded), bits(&checkpoint));
        let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "temp file left behind: {entries:?}");
    }

    #[test]
    fn overwrite_replaces_previous_checkpoint() {
        let dir = TempDir::new("ckpt-overwrite");
        let path = dir.path().join("checkpoint.json");
        save_atomic(&path, &sample()).unwrap();
        let newer = Checkpoint {
            epochs_completed: 3,
            ..sample()
        };
        save_atomic(&path, &newer).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().epochs_completed, 3);
    }

    #[test]
    fn missing_file_is_not_an_error() {
        let dir = TempDir::new("ckpt-missing");
        assert!(load(&dir.path().join("nope.json")).unwrap().is_none());
    }

    #[test]
    fn garbage_and_other_versions_are_invalid() {
        let dir = TempDir::new("ckpt-invalid");
        let path = dir.path().join("checkpoint.json");
        for text in [
            "not json",
            "{}",
            r#"{"version":99,"seed":1}"#,
            r#"{"version":1,"seed":1}"#,
            r#"{"version":1,"seed":1,"features":1,"samples":1,"epochs_completed":1,"params":["zz"]}"#,
        ] {
            fs::write(&path, text).unwrap();
            assert!(
                matches!(load(&path), Err(LoadError::Invalid(_))),
                "accepted {text}"
            );
        }
    }

    #[test]
    fn compatibility_requires_same_run() {
        let checkpoint = sample();
        assert!(checkpoint.check_compatible(42, 3, 100).is_ok());
        assert!(checkpoint
            .check_compatible(43, 3, 100)
            .unwrap_err()
            .contains("seed"));
        assert!(checkpoint
            .check_compatible(42, 4, 100)
            .unwrap_err()
            .contains("features"));
        assert!(checkpoint
            .check_compatible(42, 3, 101)
            .unwrap_err()
            .contains("samples"));
        let short = Checkpoint {
            params: vec![0.0; 2],
            ..sample()
        };
        assert!(short
            .check_compatible(42, 3, 100)
            .unwrap_err()
            .contains("parameters"));
        let broken = Checkpoint {
            params: vec![0.0, f64::NAN, 0.0, 0.0],
            ..sample()
        };
        assert!(broken.check_compatible(42, 3, 100).is_err());
    }

    #[test]
    fn parent_dir_of_bare_name_is_current_dir() {
        assert_eq!(parent_dir(Path::new("c.json")), PathBuf::from("."));
        assert_eq!(parent_dir(Path::new("/a/b/c.json")), PathBuf::from("/a/b"));
    }
}
