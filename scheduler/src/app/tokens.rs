//! API tokens: created by an admin, shown once, kept only as a hash; listed, revoked,
//! and checked on every request.

use super::cache::CachedToken;
use super::{App, AppError, AppResult, Caller, Role};
use common::store::TokenRow;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Every token starts with this, so that secret scanners and people can tell one.
pub const TOKEN_PREFIX: &str = "gpuq_";

/// A token to create.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The team it acts for: required for viewer and submitter tokens. An admin token
    /// acts for every team; a team given to it is only recorded.
    #[serde(default)]
    pub team: Option<String>,
    /// Its role.
    pub role: Role,
    /// A unique name (the actor in histories); default `TEAM-ROLE-XXXX`.
    #[serde(default)]
    pub name: Option<String>,
    /// Lifetime, as `90d`, `12h`; never expires when absent.
    #[serde(default)]
    pub expires: Option<String>,
}

/// A token just created: the only time its secret is shown.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedToken {
    /// The secret, to send as `Authorization: Bearer ...`.
    pub token: String,
    /// What is stored about it.
    #[serde(flatten)]
    pub row: TokenRow,
}

/// The hex SHA-256 of a token's secret: what the store keeps and looks up.
pub fn token_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl App {
    /// Creates a token (admins only) and returns its secret, once.
    pub async fn create_token(&self, caller: &Caller, r: &TokenRequest) -> AppResult<CreatedToken> {
        caller.require(Role::Admin, "creating tokens")?;
        let team = r.team.clone().unwrap_or_default();
        if team.is_empty() && r.role != Role::Admin {
            return Err(AppError::bad_input(format!(
                "a {} token needs a team (--team)",
                r.role
            )));
        }
        if !team.is_empty() && !common::is_safe_name(&team) {
            return Err(AppError::bad_input(format!(
                "team {team:?}: must be 1 to 63 letters, digits, '-', '_' or '.'"
            )));
        }
        let suffix = random_hex();
        let name = match &r.name {
            Some(n) if common::is_safe_name(n) => n.clone(),
            Some(n) => {
                return Err(AppError::bad_input(format!(
                    "name {n:?}: must be 1 to 63 letters, digits, '-', '_' or '.'"
                )))
            }
            None => format!(
                "{}-{}-{}",
                if team.is_empty() { "all" } else { team.as_str() },
                r.role,
                &suffix[..4]
            ),
        };
        let now = common::now_ms();
        let expires_at = match &r.expires {
            None => None,
            Some(text) => {
                let d: Duration = humantime::parse_duration(text)
                    .map_err(|e| AppError::bad_input(format!("expires {text:?}: {e}")))?;
                if d.is_zero() {
                    return Err(AppError::bad_input(format!(
                        "expires {text:?}: must be more than zero"
                    )));
                }
                Some(now + d.as_millis() as u64)
            }
        };
        let secret = format!("{TOKEN_PREFIX}{}{}", random_hex(), random_hex());
        let row = TokenRow {
            id: format!("tok_{}", &suffix[4..16]),
            name,
            team,
            role: r.role.as_str().into(),
            hash: token_hash(&secret),
            created_at: now,
            created_by: caller.actor.clone(),
            expires_at,
            revoked_at: None,
        };
        let store = self.store().await?;
        if store.tokens(None).await?.iter().any(|t| t.name == row.name) {
            return Err(AppError::Conflict(format!(
                "a token named {} exists already",
                row.name
            )));
        }
        store.insert_token(&row).await?;
        let detail = format!(
            "{} token for team {}",
            row.role,
            if row.team.is_empty() { "-" } else { &row.team }
        );
        self.audit(caller, "token.create", &row.id, &detail).await;
        Ok(CreatedToken { token: secret, row })
    }

    /// Tokens, newest first (admins only).
    pub async fn tokens(&self, caller: &Caller) -> AppResult<Vec<TokenRow>> {
        caller.require(Role::Admin, "listing tokens")?;
        Ok(self.store().await?.tokens(None).await?)
    }

    /// Revokes a token by id or name (admins only); it stops working at once.
    pub async fn revoke_token(&self, caller: &Caller, id_or_name: &str) -> AppResult<()> {
        caller.require(Role::Admin, "revoking tokens")?;
        if !self
            .store()
            .await?
            .revoke_token(id_or_name, common::now_ms())
            .await?
        {
            return Err(AppError::NotFound(format!(
                "no token {id_or_name} that is not revoked already"
            )));
        }
        // Every process that cached the token drops it before its next request.
        self.settings_changed().await?;
        self.audit(caller, "token.revoke", id_or_name, "").await;
        Ok(())
    }

    /// How many tokens could authenticate now (the API refuses to start without one).
    pub async fn usable_tokens(&self) -> AppResult<u64> {
        Ok(self.store().await?.usable_tokens(common::now_ms()).await?)
    }

    /// The caller a bearer token stands for. The secret is never logged or echoed.
    pub async fn authenticate(&self, secret: &str) -> AppResult<Caller> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Err(AppError::Unauthenticated("that is not a gpuq token".into()));
        }
        self.authenticate_hash(&token_hash(secret)).await
    }

    /// The caller the token with this hash stands for, as [`Self::authenticate`]: a
    /// dashboard session keeps the hash, so that a revoked or expired token ends it.
    pub async fn authenticate_hash(&self, hash: &str) -> AppResult<Caller> {
        let hash = hash.to_string();
        // A revocation anywhere moves the epoch, which empties the cache first.
        self.observe_settings().await?;
        let token = match self.cache.token(&hash) {
            Some(t) => t,
            None => {
                let row = self
                    .store()
                    .await?
                    .token_by_hash(&hash)
                    .await?
                    .ok_or_else(|| AppError::Unauthenticated("unknown token".into()))?;
                if row.revoked_at.is_some() {
                    return Err(AppError::Unauthenticated(format!("token {} is revoked", row.id)));
                }
                let role: Role = row
                    .role
                    .parse()
                    .map_err(|e: String| AppError::Unavailable(format!("token {}: {e}", row.id)))?;
                let t = CachedToken {
                    caller: Caller {
                        actor: row.name,
                        role,
                        // An admin sees every team.
                        team: (role != Role::Admin && !row.team.is_empty()).then_some(row.team),
                    },
                    token_id: row.id,
                    expires_at: row.expires_at,
                };
                self.cache.put_token(hash, t.clone());
                t
            }
        };
        if token.expires_at.is_some_and(|t| t <= common::now_ms()) {
            return Err(AppError::Unauthenticated(format!(
                "token {} has expired",
                token.token_id
            )));
        }
        Ok(token.caller)
    }
}
