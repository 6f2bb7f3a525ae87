//! The GPU devices a worker gives to its attempts (`--gpus`).
//!
//! The claim script admits only jobs whose GPUs fit the count of free devices the claim
//! names, so once a claim has answered, every job it took gets its devices here at once;
//! the claim loop is the only place that takes devices, and an attempt gives them back
//! only when its process tree has ended. Two running attempts never share a device.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// What `--gpus` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuArg {
    /// These devices (indices or UUIDs, as `CUDA_VISIBLE_DEVICES` takes them).
    List(Vec<String>),
    /// Every device the machine shows.
    All,
    /// None: the worker claims only jobs that need no GPU.
    None,
}

impl std::str::FromStr for GpuArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(GpuArg::All),
            "none" | "" => Ok(GpuArg::None),
            list => {
                let ids: Vec<String> = list.split(',').map(|d| d.trim().to_string()).collect();
                if let Some(bad) = ids
                    .iter()
                    .find(|d| d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                {
                    return Err(format!(
                        "{bad:?} is not a device: give indices like 0,1,2,3 or GPU UUIDs, `all` or `none`"
                    ));
                }
                let unique: BTreeSet<&String> = ids.iter().collect();
                if unique.len() != ids.len() {
                    return Err(format!("{list:?} names a device twice"));
                }
                Ok(GpuArg::List(ids))
            }
        }
    }
}

/// Finds the machine's devices for `--gpus all`: the list in `CUDA_VISIBLE_DEVICES` or
/// `NVIDIA_VISIBLE_DEVICES` when the worker was started with one (a container runtime
/// sets it), else the `GPU N:` lines of `nvidia-smi -L`.
pub fn detect(env: impl Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    for var in ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"] {
        if let Some(v) = env(var) {
            let v = v.trim();
            if !v.is_empty() && !matches!(v, "all" | "none" | "void" | "NoDevFiles") {
                return match v.parse::<GpuArg>()? {
                    GpuArg::List(ids) => Ok(ids),
                    _ => Err(format!("{var}={v:?} names no devices")),
                };
            }
        }
    }
    let out = std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .map_err(|e| {
            format!("--gpus all: cannot run nvidia-smi -L ({e}); give the devices, e.g. --gpus 0,1")
        })?;
    if !out.status.success() {
        return Err(format!(
            "--gpus all: nvidia-smi -L failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("GPU ")?
                .split(':')
                .next()
                .map(|n| n.trim().to_string())
        })
        .filter(|n| n.parse::<u32>().is_ok())
        .collect();
    if ids.is_empty() {
        return Err("--gpus all: nvidia-smi -L lists no GPU".into());
    }
    Ok(ids)
}

/// The worker's devices and which of them attempts hold.
#[derive(Debug, Clone)]
pub struct Devices {
    inner: Option<Arc<Mutex<Pool>>>,
}

#[derive(Debug)]
struct Pool {
    all: Vec<String>,
    free: Vec<String>,
}

impl Devices {
    /// A worker that holds no devices (Kubernetes, no-op, simulated): the claim is not
    /// limited by devices, and attempts are given none.
    pub fn unmanaged() -> Devices {
        Devices { inner: None }
    }

    /// A worker that gives these devices to its attempts (possibly none at all, so it
    /// claims only jobs that need no GPU).
    pub fn managed(all: Vec<String>) -> Devices {
        Devices {
            inner: Some(Arc::new(Mutex::new(Pool {
                free: all.clone(),
                all,
            }))),
        }
    }

    /// Free devices, for the claim; `None` when devices are not managed here.
    pub fn free(&self) -> Option<u32> {
        self.inner
            .as_ref()
            .map(|p| p.lock().expect("device pool poisoned").free.len() as u32)
    }

    /// Every device, for the heartbeat.
    pub fn all(&self) -> Vec<String> {
        self.inner
            .as_ref()
            .map(|p| p.lock().expect("device pool poisoned").all.clone())
            .unwrap_or_default()
    }

    /// The devices attempts hold now, for the heartbeat.
    pub fn busy(&self) -> Vec<String> {
        let Some(p) = &self.inner else { return Vec::new() };
        let p = p.lock().expect("device pool poisoned");
        p.all.iter().filter(|d| !p.free.contains(d)).cloned().collect()
    }

    /// Takes `n` devices for one attempt (lowest first), or `None` when fewer are free.
    /// Unmanaged devices always grant an empty, unmanaged set.
    pub fn take(&self, n: u32) -> Option<Grant> {
        let Some(p) = &self.inner else {
            return Some(Grant {
                devices: None,
                pool: None,
            });
        };
        let mut pool = p.lock().expect("device pool poisoned");
        if (pool.free.len() as u32) < n {
            return None;
        }
        let taken: Vec<String> = pool.free.drain(..n as usize).collect();
        Some(Grant {
            devices: Some(taken),
            pool: Some(p.clone()),
        })
    }
}

/// Devices held by one attempt, given back when dropped.
#[derive(Debug)]
pub struct Grant {
    devices: Option<Vec<String>>,
    pool: Option<Arc<Mutex<Pool>>>,
}

impl Grant {
    /// The attempt's devices: `None` when the worker does not manage devices (leave the
    /// job's view alone), else exactly these (maybe none: the job sees no GPU).
    pub fn devices(&self) -> Option<&[String]> {
        self.devices.as_deref()
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let (Some(pool), Some(devices)) = (&self.pool, self.devices.take()) {
            let mut p = pool.lock().expect("device pool poisoned");
            p.free.extend(devices);
            // Keep the order of `all`, so the lowest free devices go first.
            let order: Vec<String> = p.all.clone();
            p.free.sort_by_key(|d| order.iter().position(|o| o == d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag() {
        assert_eq!(
            "0,1,2".parse::<GpuArg>().unwrap(),
            GpuArg::List(vec!["0".into(), "1".into(), "2".into()])
        );
        assert_eq!("all".parse::<GpuArg>().unwrap(), GpuArg::All);
        assert_eq!("none".parse::<GpuArg>().unwrap(), GpuArg::None);
        assert!("0,0".parse::<GpuArg>().unwrap_err().contains("twice"));
        assert!("0;1".parse::<GpuArg>().is_err());
    }

    #[test]
    fn grants_are_disjoint_and_come_back() {
        let d = Devices::managed(vec!["0".into(), "1".into(), "2".into(), "3".into()]);
        let a = d.take(2).unwrap();
        let b = d.take(1).unwrap();
        assert_eq!(a.devices().unwrap(), ["0", "1"]);
        assert_eq!(b.devices().unwrap(), ["2"]);
        assert!(d.take(2).is_none());
        assert_eq!(d.free(), Some(1));
        drop(a);
        assert_eq!(d.free(), Some(3));
        assert_eq!(d.take(3).unwrap().devices().unwrap(), ["0", "1", "3"]);
        assert_eq!(Devices::unmanaged().free(), None);
    }

    #[test]
    fn detects_devices_from_the_environment() {
        let env = |k: &str| (k == "NVIDIA_VISIBLE_DEVICES").then(|| "2,3".to_string());
        assert_eq!(detect(env).unwrap(), ["2", "3"]);
    }
}
