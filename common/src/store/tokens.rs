//! API tokens (only their hashes) and the audit log.

use super::{store_err, JobStore};
use crate::Result;
use sqlx::Row;

/// A stored API token: everything but the secret, which is never kept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenRow {
    /// Stable id (`tok_` and 12 hex digits), shown in listings and used to revoke.
    pub id: String,
    /// Unique name; the actor written in histories and the audit log.
    pub name: String,
    /// The team it acts for; empty for an admin token of no team.
    pub team: String,
    /// `viewer`, `submitter` or `admin`.
    pub role: String,
    /// Hex SHA-256 of the secret.
    #[serde(skip)]
    pub hash: String,
    /// Creation time, ms.
    pub created_at: u64,
    /// Who created it.
    pub created_by: String,
    /// Expiry time, ms; `None` when it never expires.
    pub expires_at: Option<u64>,
    /// Revocation time, ms.
    pub revoked_at: Option<u64>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// When, ms.
    pub at: u64,
    /// Who (a token's name, or `operator`).
    pub actor: String,
    /// What (`budget.set`, `token.create`, ...).
    pub action: String,
    /// On what (a team, a token id, ...).
    pub target: String,
    /// The rest, for people.
    pub detail: String,
}

const TOKEN_COLUMNS: &str = "id, name, team, role, hash, created_at, created_by, expires_at, revoked_at";

fn token_row(r: &sqlx::any::AnyRow) -> Result<TokenRow> {
    let opt = |v: i64| (v > 0).then_some(v as u64);
    Ok(TokenRow {
        id: r.try_get("id").map_err(store_err)?,
        name: r.try_get("name").map_err(store_err)?,
        team: r.try_get("team").map_err(store_err)?,
        role: r.try_get("role").map_err(store_err)?,
        hash: r.try_get("hash").map_err(store_err)?,
        created_at: r.try_get::<i64, _>("created_at").map_err(store_err)? as u64,
        created_by: r.try_get("created_by").map_err(store_err)?,
        expires_at: opt(r.try_get("expires_at").map_err(store_err)?),
        revoked_at: opt(r.try_get("revoked_at").map_err(store_err)?),
    })
}

impl JobStore {
    /// Stores a new token. Fails (StoreRefused) when its name is taken.
    pub async fn insert_token(&self, t: &TokenRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, team, role, hash, created_at, created_by, expires_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
        )
        .bind(t.id.as_str())
        .bind(t.name.as_str())
        .bind(t.team.as_str())
        .bind(t.role.as_str())
        .bind(t.hash.as_str())
        .bind(t.created_at as i64)
        .bind(t.created_by.as_str())
        .bind(t.expires_at.unwrap_or(0) as i64)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    /// The token whose secret hashes to `hash`, revoked or expired ones included (the
    /// caller says which it was).
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        row.as_ref().map(token_row).transpose()
    }

    /// All tokens, newest first; of one team when `team` is given.
    pub async fn tokens(&self, team: Option<&str>) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE ($1 = '' OR team = $1) ORDER BY created_at DESC, id"
        ))
        .bind(team.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.iter().map(token_row).collect()
    }

    /// How many tokens could authenticate now (not revoked, not expired).
    pub async fn usable_tokens(&self, now_ms: u64) -> Result<u64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_tokens WHERE revoked_at = 0 AND (expires_at = 0 OR expires_at > $1)",
        )
        .bind(now_ms as i64)
        .fetch_one(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(row.try_get::<i64, _>("n").map_err(store_err)? as u64)
    }

    /// Revokes the token with this id or name; false when there is none (or it was
    /// already revoked).
    pub async fn revoke_token(&self, id_or_name: &str, now_ms: u64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE (id = $2 OR name = $2) AND revoked_at = 0",
        )
        .bind(now_ms as i64)
        .bind(id_or_name)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Appends to the audit log.
    pub async fn audit(&self, e: &AuditEntry) -> Result<()> {
        sqlx::query("INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
            .bind(e.at as i64)
            .bind(e.actor.as_str())
            .bind(e.action.as_str())
            .bind(e.target.as_str())
            .bind(e.detail.as_str())
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// The audit log's latest `limit` entries, newest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let rows =
            sqlx::query("SELECT at, actor, action, target, detail FROM audit_log ORDER BY at DESC LIMIT $1")
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(store_err)?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get::<i64, _>("at").map_err(store_err)? as u64,
                    actor: r.try_get("actor").map_err(store_err)?,
                    action: r.try_get("action").map_err(store_err)?,
                    target: r.try_get("target").map_err(store_err)?,
                    detail: r.try_get("detail").map_err(store_err)?,
                })
            })
            .collect()
    }
}
