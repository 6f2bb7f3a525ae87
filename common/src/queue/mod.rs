//! The Redis queue protocol: the only module that knows key names and scripts.
//!
//! Every operation that touches more than one key is a single Lua script (see `lua/`),
//! so each is atomic: a process killed at any instant leaves every job either queued,
//! delayed, in exactly one worker's in-flight hash, or finished. Nothing is in between.

mod admin;
mod enqueue;
pub mod keys;
mod lease;
mod listing;
mod mirror;
mod outbox;
mod pending;
mod preempt;
mod prepared;
mod quota;
mod scripts;
mod sentinel;
mod sessions;

pub use admin::{LogChunk, PriorityStatus, QueueStatus};
pub use enqueue::{
    BatchKey, ChunkedEnqueue, EnqueueReport, MAX_ATOMIC_BATCH, REPLICA_ACK_TIMEOUT, RESUMABLE_FOR,
};
pub use keys::Keys;
pub use lease::{Claim, ClaimedJob, EndedAttempt, FinishState, Heartbeat, Lease, Outcome, Room, Unreadable};
pub use mirror::RestoreItem;
pub use outbox::{OutboxEvent, RefusedEntry};
pub use preempt::{PreemptionCount, PREEMPTED};
pub use quota::{Drift, Held, PoolStatus, Usage, Waiting};

use crate::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::AsyncCommands;
use redis::AsyncConnectionConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Upper bound for one command's reply on the shared connection; batch enqueue of many
/// thousands of jobs is one script call, so this is generous.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to one namespace of the queue.
///
/// Every clone shares one multiplexed connection: concurrent calls are pipelined on it,
/// which is what lets a worker's many attempts report in few socket writes. A pool would
/// only add a health-check round trip per checkout (deadpool-redis pings on each one).
/// The connection reconnects by itself after Redis restarts; calls made while it is
/// down fail with a retryable [`Error::Redis`].
#[derive(Clone)]
pub struct RedisQueue {
    target: Target,
    keys: Keys,
    url: String,
    outbox_limit: u64,
    /// The admission configuration as this process last read it, shared by clones:
    /// enqueue checks against it without reading it again, and its script refuses the
    /// write when the configuration in Redis is no longer this one (see
    /// `enqueue_batch_as`).
    admission_seen: Arc<std::sync::Mutex<Option<quota::AdmissionSeen>>>,
}

/// Where the queue's Redis is.
#[derive(Clone)]
enum Target {
    /// One server at a fixed address, reconnected to after it restarts.
    Direct {
        client: Box<redis::Client>,
        shared: Arc<OnceCell<ConnectionManager>>,
    },
    /// The primary that a set of Sentinels names, followed through failovers.
    Sentinel(Arc<sentinel::Primary>),
}

/// Default bound of the outbox: past it, enqueue is refused (see [`RedisQueue::with_outbox_limit`]).
pub const DEFAULT_OUTBOX_LIMIT: u64 = 1_000_000;

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("url", &self.url)
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

impl RedisQueue {
    /// Opens the queue of `namespace` on the Redis at `url` and checks that the server
    /// answers.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        let q = Self::open(url, namespace)?;
        q.ping().await?;
        Ok(q)
    }

    /// Checks the arguments without contacting Redis (the connection is made on first use).
    pub fn open(url: &str, namespace: &str) -> Result<Self> {
        let keys = Keys::new(namespace)?;
        // rediss:// needs a crypto provider; the first caller in the process installs
        // ring's (one installed already, by kube's client say, is kept).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let target = if sentinel::is_sentinel_url(url) {
            Target::Sentinel(Arc::new(sentinel::Primary::parse(
                url,
                mask_url(url),
                manager_config(),
            )?))
        } else {
            let client = redis::Client::open(url)
                .map_err(|e| Error::InvalidInput(format!("invalid Redis URL {}: {e}", mask_url(url))))?;
            Target::Direct {
                client: Box::new(client),
                shared: Arc::new(OnceCell::new()),
            }
        };
        Ok(RedisQueue {
            target,
            keys,
            url: url.to_string(),
            outbox_limit: DEFAULT_OUTBOX_LIMIT,
            admission_seen: Arc::default(),
        })
    }

    /// Sets the outbox bound. The outbox holds every transition until the job store has
    /// it and is never trimmed; while it holds more than `limit` entries (the store has
    /// been unreachable for long, or `scheduler serve` is not running), enqueue fails
    /// with [`Error::OutboxFull`] rather than let Redis fill up. Transitions of jobs
    /// already queued are always written.
    pub fn with_outbox_limit(mut self, limit: u64) -> Self {
        self.outbox_limit = limit;
        self
    }

    /// How many replicas must acknowledge an enqueue before it is reported done: the
    /// Sentinel URL's `replicas` (default 1), and 0 for a single server.
    pub fn replica_acks(&self) -> u32 {
        match &self.target {
            Target::Direct { .. } => 0,
            Target::Sentinel(primary) => primary.replicas(),
        }
    }

    /// The outbox bound (see [`with_outbox_limit`](Self::with_outbox_limit)).
    pub fn outbox_limit(&self) -> u64 {
        self.outbox_limit
    }

    /// The key builder of this namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The server URL with any password masked, for messages.
    pub fn display_url(&self) -> String {
        mask_url(&self.url)
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// The shared connection (a cheap handle; clones pipeline on one socket).
    pub(crate) async fn conn(&self) -> Result<ConnectionManager> {
        match &self.target {
            Target::Direct { client, shared } => {
                let manager = shared
                    .get_or_try_init(|| async {
                        ConnectionManager::new_lazy_with_config((**client).clone(), manager_config())
                    })
                    .await?;
                Ok(manager.clone())
            }
            Target::Sentinel(primary) => primary.conn().await,
        }
    }

    /// The connection for writes that wait for replicas (`WAIT`): the shared one for a
    /// single server, which never waits, and a second shared one behind Sentinel, so
    /// that a WAIT never holds up the calls on the first.
    pub(crate) async fn durable_conn(&self) -> Result<ConnectionManager> {
        match &self.target {
            Target::Direct { .. } => self.conn().await,
            Target::Sentinel(primary) => primary.durable().await,
        }
    }

    /// A dedicated connection without a response timeout, for blocking commands
    /// (BLPOP would otherwise hold up a multiplexed pooled connection and time out).
    pub async fn blocking_connection(&self) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        let client = match &self.target {
            Target::Direct { client, .. } => (**client).clone(),
            Target::Sentinel(primary) => primary.client().await?,
        };
        Ok(client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Blocks on the wake-up list until a job may be available or `timeout` passes.
    /// Returns true when woken by an enqueue (or a stale token: claiming then finds nothing).
    pub async fn wait_for_work(&self, conn: &mut MultiplexedConnection, timeout: Duration) -> Result<bool> {
        let woke: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(self.keys.wake())
            .arg(timeout.as_secs_f64().max(0.01))
            .query_async(conn)
            .await?;
        Ok(woke.is_some())
    }
}

impl RedisQueue {
    /// The settings epoch (see [`Keys::settings_epoch`]); 0 before the first change.
    pub async fn settings_epoch(&self) -> Result<u64> {
        let mut conn = self.conn().await?;
        let v: Option<u64> = conn.get(self.keys.settings_epoch()).await?;
        Ok(v.unwrap_or(0))
    }

    /// Moves the settings epoch on, after a change to a setting others may cache.
    pub async fn bump_settings_epoch(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: u64 = conn.incr(self.keys.settings_epoch(), 1).await?;
        Ok(())
    }

    /// Blocks on `conn` (a [`Self::blocking_connection`]) until any job changes state
    /// (a new outbox entry) or `timeout` passes. Waiters then read the job they wait
    /// for: one wake-up per transition, whichever job it was, costs a hash read.
    pub async fn wait_for_transition(
        &self,
        conn: &mut MultiplexedConnection,
        timeout: Duration,
    ) -> Result<()> {
        let _: redis::Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(timeout.as_millis().max(1) as u64)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(self.keys.outbox())
            .arg("$")
            .query_async(conn)
            .await?;
        Ok(())
    }
}

/// How the shared connection connects and reconnects.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        // Reconnection is retried briefly; callers retry their own calls with backoff,
        // and each failed call starts a new reconnection.
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// Replaces the password in a URL with `***` so it can be logged.
pub fn mask_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.rsplit_once('@') {
            let user = auth.split_once(':').map(|(u, _)| u).unwrap_or(auth);
            return if auth.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            };
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_passwords() {
        assert_eq!(
            super::mask_url("redis://:s3cret@h:6379/0"),
            "redis://:***@h:6379/0"
        );
        assert_eq!(super::mask_url("redis://u:p@h"), "redis://u:***@h");
        assert_eq!(super::mask_url("redis://h:6379"), "redis://h:6379");
    }
}
