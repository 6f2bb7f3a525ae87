//! Sessions of the web dashboard, kept in Redis so that any `serve` replica behind a
//! load balancer knows them, and so that they expire by themselves (a key with a TTL).
//! The key holds the SHA-256 of the cookie, never the cookie: reading Redis does not
//! let anyone sign in. What a session holds is the dashboard's business (JSON).

use super::RedisQueue;
use crate::Result;
use redis::AsyncCommands;
use std::time::Duration;

impl RedisQueue {
    /// Keeps a session for `ttl`.
    pub async fn put_ui_session(&self, hash: &str, value: &str, ttl: Duration) -> Result<()> {
        let mut conn = self.conn().await?;
        let ms = ttl.as_millis().max(1) as u64;
        let _: () = redis::cmd("SET")
            .arg(self.keys.ui_session(hash))
            .arg(value)
            .arg("PX")
            .arg(ms)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// A session, while it lasts.
    pub async fn ui_session(&self, hash: &str) -> Result<Option<String>> {
        let mut conn = self.conn().await?;
        Ok(conn.get(self.keys.ui_session(hash)).await?)
    }

    /// Ends a session (signing out).
    pub async fn drop_ui_session(&self, hash: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: () = conn.del(self.keys.ui_session(hash)).await?;
        Ok(())
    }
}
