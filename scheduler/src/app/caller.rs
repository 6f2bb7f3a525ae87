//! Who is calling, and what they may do.

use super::{AppError, AppResult};
use common::JobRecord;

/// What a caller may do. Each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads its team's jobs, costs, quotas and budgets.
    Viewer,
    /// Also enqueues, cancels and retries its team's jobs.
    Submitter,
    /// Everything, for every team: quotas, budgets and tokens too.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Submitter => "submitter",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "submitter" => Ok(Role::Submitter),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?}: use viewer, submitter or admin")),
        }
    }
}

/// The identity an operation runs as: an operator at the CLI, or a token's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Written into job histories and the audit log.
    pub actor: String,
    /// What it may do.
    pub role: Role,
    /// The one team it acts for, or `None` for every team.
    pub team: Option<String>,
}

impl Caller {
    /// An operator with access to Redis: every team, every operation. Their writes
    /// name `operator` in histories, as they always have.
    pub fn operator() -> Self {
        Caller {
            actor: "operator".into(),
            role: Role::Admin,
            team: None,
        }
    }

    /// Anyone, on a server run without authentication (`--insecure-no-auth`): an admin
    /// of every team, named as such in histories.
    pub fn unauthenticated() -> Self {
        Caller {
            actor: "anonymous (no auth)".into(),
            ..Caller::operator()
        }
    }

    /// Refuses unless the caller's role includes `needed`.
    pub fn require(&self, needed: Role, what: &str) -> AppResult<()> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "{what} needs the {needed} role; this token is a {}",
                self.role
            )))
        }
    }

    /// True when the caller may see the jobs of `team`.
    pub fn sees_team(&self, team: &str) -> bool {
        self.team.as_deref().is_none_or(|t| t == team)
    }

    /// The job, or "not found" when the caller's team may not see it: another team's
    /// job is indistinguishable from a missing one.
    pub fn visible(&self, record: Option<JobRecord>, id: &str) -> AppResult<JobRecord> {
        match record {
            Some(r) if self.sees_team(&r.spec.team) => Ok(r),
            _ => Err(AppError::NotFound(format!("job {id} not found"))),
        }
    }

    /// The team filter for reads: the caller's own team, or the requested one when the
    /// caller sees every team. A team caller asking for another team is refused.
    pub fn team_filter(&self, requested: Option<String>) -> AppResult<Option<String>> {
        match (&self.team, requested) {
            (None, r) => Ok(r),
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(r)) if *own == r => Ok(Some(r)),
            (Some(own), Some(r)) => Err(AppError::Forbidden(format!(
                "this token is for team {own}; it cannot read team {r}"
            ))),
        }
    }
}
