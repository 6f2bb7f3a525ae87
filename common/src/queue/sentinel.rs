//! Following a Redis primary through Sentinel failovers.
//!
//! `redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?replicas=N]`
//! names the Sentinels (port 26379 by default) and the service they monitor; the
//! credentials and database are the data nodes'. `rediss+sentinel://` speaks TLS to both.
//! The Sentinels themselves are reached without credentials. An enqueue is reported done
//! only once `replicas` replicas (default 1) have it (see `RedisQueue::replica_acks`).
//!
//! The primary's address is looked up again at most once per [`LOOKUP_EVERY`], by
//! whichever call comes first after that. A failover shows up that way within a second:
//! Sentinel disconnects every client of the demoted primary, calls made meanwhile fail
//! with a retryable error (READONLY, or a reset connection), and the next lookup moves
//! the shared connection to the new primary. Polling costs one Sentinel query and one
//! `ROLE` check a second per process, and needs no subscription to keep alive.

use crate::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{IntoConnectionInfo, TlsMode};
use std::time::{Duration, Instant};

/// How long a looked-up primary address is trusted before asking the Sentinels again.
pub(crate) const LOOKUP_EVERY: Duration = Duration::from_secs(1);
const DEFAULT_PORT: u16 = 26379;

/// Whether `url` names Sentinels rather than one server.
pub(crate) fn is_sentinel_url(url: &str) -> bool {
    url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://")
}

/// The current primary of one Sentinel-monitored service, and a shared connection to it.
pub(crate) struct Primary {
    service: String,
    node: SentinelNodeConnectionInfo,
    sentinel: tokio::sync::Mutex<Sentinel>,
    current: std::sync::Mutex<Option<Current>>,
    /// How the connections to each primary connect and reconnect.
    config: ConnectionManagerConfig,
    /// Replicas that must acknowledge an enqueue.
    replicas: u32,
    /// The URL with the password masked, for messages.
    display: String,
}

#[derive(Clone)]
struct Current {
    addr: String,
    client: redis::Client,
    manager: ConnectionManager,
    /// For enqueues that WAIT for replicas (see `RedisQueue::durable_conn`).
    durable: ConnectionManager,
    looked: Instant,
}

impl Primary {
    /// Parses a Sentinel URL; nothing is contacted yet.
    pub(crate) fn parse(url: &str, display: String, config: ConnectionManagerConfig) -> Result<Self> {
        let bad = |why: &str| Error::InvalidInput(format!("invalid Redis Sentinel URL {display}: {why}"));
        let (tls, rest) = if let Some(r) = url.strip_prefix("rediss+sentinel://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("redis+sentinel://") {
            (false, r)
        } else {
            return Err(bad("it must start with redis+sentinel:// or rediss+sentinel://"));
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut replicas = 1;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("replicas", n)) => {
                    replicas = n
                        .parse()
                        .map_err(|_| bad(&format!("replicas={n} is not a count")))?
                }
                _ => return Err(bad(&format!("unknown parameter {pair} (only replicas=N)"))),
            }
        }
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it names no service (…/SERVICE)"))?;
        let mut parts = path.split('/');
        let service = parts.next().unwrap_or_default();
        if service.is_empty() {
            return Err(bad("it names no service (…/SERVICE)"));
        }
        let db = parts.next().filter(|d| !d.is_empty()).unwrap_or("0");
        if db.parse::<i64>().is_err() || parts.next().is_some() {
            return Err(bad("the path must be /SERVICE or /SERVICE/DB"));
        }
        let scheme = if tls { "rediss" } else { "redis" };
        let mut sentinels = Vec::new();
        for host in hosts.split(',').filter(|h| !h.is_empty()) {
            let addr = if host
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                host.to_string()
            } else {
                format!("{host}:{DEFAULT_PORT}")
            };
            let info = format!("{scheme}://{addr}")
                .into_connection_info()
                .map_err(|e| bad(&format!("sentinel {host}: {e}")))?;
            sentinels.push(info);
        }
        if sentinels.is_empty() {
            return Err(bad("it names no Sentinel"));
        }
        // The data nodes' credentials and database, read the way a plain URL's are.
        let node_url = match auth {
            Some(a) => format!("redis://{a}@localhost/{db}"),
            None => format!("redis://localhost/{db}"),
        };
        let settings = node_url.into_connection_info().map_err(|e| bad(&e.to_string()))?;
        let mut node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(settings.redis_settings().clone());
        if tls {
            node = node.set_tls_mode(TlsMode::Secure);
        }
        let sentinel = Sentinel::build(sentinels).map_err(|e| bad(&e.to_string()))?;
        Ok(Primary {
            service: service.to_string(),
            node,
            sentinel: tokio::sync::Mutex::new(sentinel),
            current: std::sync::Mutex::new(None),
            config,
            replicas,
            display,
        })
    }

    /// Replicas that must acknowledge an enqueue.
    pub(crate) fn replicas(&self) -> u32 {
        self.replicas
    }

    /// The shared connection to the current primary.
    pub(crate) async fn conn(&self) -> Result<ConnectionManager> {
        Ok(self.current().await?.manager)
    }

    /// The second shared connection to the current primary, for writes that WAIT.
    pub(crate) async fn durable(&self) -> Result<ConnectionManager> {
        Ok(self.current().await?.durable)
    }

    /// A client for the current primary, for dedicated connections.
    pub(crate) async fn client(&self) -> Result<redis::Client> {
        Ok(self.current().await?.client)
    }

    async fn current(&self) -> Result<Current> {
        let known = self.current.lock().unwrap().clone();
        if let Some(c) = &known {
            if c.looked.elapsed() < LOOKUP_EVERY {
                return Ok(c.clone());
            }
        }
        // One lookup at a time; the others go on with the primary known so far.
        let mut sentinel = match (self.sentinel.try_lock(), &known) {
            (Ok(s), _) => s,
            (Err(_), Some(c)) => return Ok(c.clone()),
            (Err(_), None) => {
                let s = self.sentinel.lock().await;
                // Another call may have found the primary while this one waited.
                if let Some(c) = self.current.lock().unwrap().clone() {
                    return Ok(c);
                }
                s
            }
        };
        let found = tokio::time::timeout(
            super::CONNECT_TIMEOUT,
            sentinel.async_master_for(&self.service, Some(&self.node)),
        )
        .await;
        let client = match found {
            Ok(Ok(client)) => client,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in time".to_string(),
                };
                let mut cur = self.current.lock().unwrap();
                return match cur.as_mut() {
                    // Keep using the last primary; the next call after LOOKUP_EVERY asks again.
                    Some(c) => {
                        tracing::warn!(sentinels = %self.display, "cannot look up the Redis primary: {why}");
                        c.looked = Instant::now();
                        Ok(c.clone())
                    }
                    None => Err(Error::Redis(redis::RedisError::from(std::io::Error::other(
                        format!(
                            "no Sentinel of {} names a primary for {}: {why}",
                            self.display, self.service
                        ),
                    )))),
                };
            }
        };
        let addr = client.get_connection_info().addr().to_string();
        let mut cur = self.current.lock().unwrap();
        match cur.as_mut() {
            Some(c) if c.addr == addr => {
                c.looked = Instant::now();
                Ok(c.clone())
            }
            _ => {
                match &*cur {
                    Some(old) => {
                        tracing::warn!(from = %old.addr, to = %addr, "the Redis primary moved: following it")
                    }
                    None => tracing::debug!(primary = %addr, "Redis primary found through Sentinel"),
                }
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), self.config.clone())?;
                let durable = ConnectionManager::new_lazy_with_config(client.clone(), self.config.clone())?;
                let c = Current {
                    addr,
                    client,
                    manager,
                    durable,
                    looked: Instant::now(),
                };
                *cur = Some(c.clone());
                Ok(c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Primary;

    fn parse(url: &str) -> Result<Primary, String> {
        Primary::parse(url, crate::queue::mask_url(url), super::super::manager_config())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_sentinels_service_and_database() {
        let p = parse("redis+sentinel://u:pw@10.0.0.1:26380,10.0.0.2/gpuq/3").unwrap();
        assert_eq!(p.service, "gpuq");
        assert_eq!(p.replicas, 1);
        assert_eq!(parse("redis+sentinel://h/gpuq?replicas=0").unwrap().replicas, 0);
        assert!(p.display.contains("u:***@"), "{}", p.display);
    }

    #[test]
    fn refuses_urls_without_a_service_or_a_sentinel() {
        for (url, why) in [
            ("redis+sentinel://h1,h2", "names no service"),
            ("redis+sentinel://h1/", "names no service"),
            ("redis+sentinel:///gpuq", "names no Sentinel"),
            ("redis+sentinel://h1/gpuq/x", "/SERVICE or /SERVICE/DB"),
            ("redis+sentinel://h1/gpuq?replicas=x", "not a count"),
            ("redis+sentinel://h1/gpuq?wait=1", "unknown parameter"),
        ] {
            let err = parse(url).err().unwrap();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
