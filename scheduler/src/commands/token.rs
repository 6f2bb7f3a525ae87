//! `token create|list|revoke`.

use crate::app::{App, Caller, Role, TokenRequest};
use crate::cli::TokenCommand;
use crate::format::{print_json, timestamp};
use crate::{CliError, CliResult};

pub(crate) async fn run(app: &App, caller: &Caller, command: TokenCommand) -> CliResult<()> {
    match command {
        TokenCommand::Create(a) => {
            let role: Role = a.role.parse().map_err(CliError::BadInput)?;
            let created = app
                .create_token(
                    caller,
                    &TokenRequest {
                        team: a.team,
                        role,
                        name: a.name,
                        expires: a.expires,
                    },
                )
                .await?;
            if a.json {
                print_json(&created);
            } else {
                // The secret alone on stdout, so that `$(scheduler token create ...)` works.
                println!("{}", created.token);
                eprintln!(
                    "token {} ({}, {} role{}): shown once; only its hash is kept",
                    created.row.name,
                    created.row.id,
                    created.row.role,
                    if created.row.team.is_empty() {
                        ", every team".to_string()
                    } else {
                        format!(", team {}", created.row.team)
                    }
                );
            }
        }
        TokenCommand::List(a) => {
            let tokens = app.tokens(caller).await?;
            if a.json {
                print_json(&tokens);
                return Ok(());
            }
            if tokens.is_empty() {
                println!("no tokens");
                return Ok(());
            }
            println!(
                "{:<17} {:<24} {:<14} {:<10} {:<25} STATE",
                "ID", "NAME", "TEAM", "ROLE", "CREATED"
            );
            let now = common::now_ms();
            for t in &tokens {
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(at), _) => format!("revoked {}", timestamp(at)),
                    (None, Some(at)) if at <= now => format!("expired {}", timestamp(at)),
                    (None, Some(at)) => format!("expires {}", timestamp(at)),
                    (None, None) => "active".into(),
                };
                println!(
                    "{:<17} {:<24} {:<14} {:<10} {:<25} {state}",
                    t.id,
                    t.name,
                    if t.team.is_empty() { "*" } else { &t.team },
                    t.role,
                    timestamp(t.created_at)
                );
            }
        }
        TokenCommand::Revoke(a) => {
            app.revoke_token(caller, &a.token).await?;
            println!("token {} revoked", a.token);
        }
    }
    Ok(())
}
