//! The agent tools: the Model Context Protocol over the application layer, on stdio
//! (`scheduler mcp`) and over streamable HTTP at `/mcp` (`serve --api`), with the same
//! tokens as the HTTP API.
//!
//! Each tool is one [`App`] call. A result is readable both ways: structured content
//! (the operation's JSON) and a text line saying what happened. A refusal (bad input,
//! over budget, another team's job) is a tool error whose structured content is the
//! API's error body, `{"code", "message"}`, so an agent can act on the code.

mod args;
mod http;

pub use http::router;

use crate::app::{App, AppError, AppResult, Caller, ReportRequest, SameId};
use args::*;
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde::Serialize;

/// The tools, for one transport.
#[derive(Clone)]
pub struct Tools {
    app: App,
    /// The caller over stdio; over HTTP each request brings its own.
    local: Option<Caller>,
    tool_router: ToolRouter<Self>,
}

fn done<T: Serialize>(text: String, value: &T) -> CallToolResult {
    let mut r = CallToolResult::structured(serde_json::to_value(value).unwrap_or_default());
    r.content.insert(0, ContentBlock::text(text));
    r
}

fn refused(e: AppError) -> CallToolResult {
    let mut r =
        CallToolResult::structured_error(serde_json::json!({"code": e.code(), "message": e.to_string()}));
    r.content
        .insert(0, ContentBlock::text(format!("refused ({}): {e}", e.code())));
    r
}

/// Lists go out as objects: structured content must be one.
#[derive(Serialize)]
struct Budgets {
    budgets: Vec<crate::app::Standing>,
}

#[derive(Serialize)]
struct Scenarios {
    scenarios: Vec<cost::ComparisonRow>,
}

/// A tool's answer: what it did, or why not.
type Answer = Result<CallToolResult, ErrorData>;

fn answer<T: Serialize>(result: AppResult<T>, text: impl FnOnce(&T) -> String) -> Answer {
    Ok(match result {
        Ok(v) => done(text(&v), &v),
        Err(e) => refused(e),
    })
}

fn job_id(raw: &str) -> AppResult<common::JobId> {
    raw.parse()
        .map_err(|e: String| AppError::bad_input(format!("job_id {raw:?}: {e}")))
}

fn spec_of(
    app: &App,
    caller: &Caller,
    spec: serde_json::Map<String, serde_json::Value>,
) -> AppResult<common::JobSpec> {
    app.spec_from_value(caller, serde_json::Value::Object(spec))
}

#[tool_router]
impl Tools {
    /// Tools acting as `local` (stdio), or as each HTTP request's caller (`None`).
    pub fn new(app: App, local: Option<Caller>) -> Self {
        Tools {
            app,
            local,
            tool_router: Self::tool_router(),
        }
    }

    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        if let Some(parts) = ctx.extensions.get::<axum::http::request::Parts>() {
            return parts
                .extensions
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| ErrorData::invalid_request("unauthenticated", None));
        }
        self.local
            .clone()
            .ok_or_else(|| ErrorData::invalid_request("no caller for this transport", None))
    }

    #[tool(
        description = "Validate, budget-check and enqueue one training job. Returns the job (id, state, position, why it waits) and its cost estimate. Refused with code over_budget when it would take a team budget over 100%, invalid_spec when the spec is wrong."
    )]
    async fn queue_training_job(
        &self,
        Parameters(a): Parameters<SpecArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = match spec_of(&self.app, &caller, a.spec) {
            Ok(spec) => self.app.enqueue(&caller, spec, SameId::RefuseOtherSpec).await,
            Err(e) => Err(e),
        };
        answer(result, |o| {
            let cost = o
                .estimate
                .as_ref()
                .map(|e| format!("; {}", e.line()))
                .unwrap_or_default();
            if o.created {
                format!("queued job {} ({}){cost}", o.job.id, o.job.spec.name)
            } else {
                format!(
                    "job {} was already queued with this spec; nothing changed",
                    o.job.id
                )
            }
        })
    }

    #[tool(
        description = "Enqueue several training jobs at once, all or none, after one budget check for all of them."
    )]
    async fn submit_batch_training_jobs(
        &self,
        Parameters(a): Parameters<BatchArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let specs: AppResult<Vec<_>> = a
            .jobs
            .into_iter()
            .map(|s| spec_of(&self.app, &caller, s))
            .collect();
        let result = match specs {
            Ok(specs) => {
                self.app
                    .enqueue_batch(&caller, specs, None, SameId::RefuseOtherSpec)
                    .await
            }
            Err(e) => Err(e),
        };
        answer(result, |o| {
            format!(
                "enqueued {} jobs ({} already existed){}",
                o.report.created,
                o.report.existing.len(),
                o.estimate
                    .as_ref()
                    .map(|e| format!("; {}", e.line()))
                    .unwrap_or_default()
            )
        })
    }

    #[tool(
        description = "Cancel a job that is still waiting (queued, deferred or retrying). A running job is refused with code conflict: use cancel_training_job."
    )]
    async fn cancel_queued_job(
        &self,
        Parameters(a): Parameters<CancelArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = async {
            let id = job_id(&a.job_id)?;
            let job = self.app.job(&caller, &id).await?;
            if job.state == common::JobState::Running {
                return Err(AppError::Conflict(format!(
                    "job {id} is running; cancel_training_job stops running jobs"
                )));
            }
            self.app.cancel(&caller, &id, a.reason.as_deref()).await
        }
        .await;
        answer(result, |o| format!("job {} {}", o.id, o.state))
    }

    #[tool(
        description = "Cancel a job, queued or running (its worker stops it), with a reason kept in its history."
    )]
    async fn cancel_training_job(
        &self,
        Parameters(a): Parameters<CancelArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = match job_id(&a.job_id) {
            Ok(id) => self.app.cancel(&caller, &id, a.reason.as_deref()).await,
            Err(e) => Err(e),
        };
        answer(result, |o| format!("job {} {}", o.id, o.state))
    }

    #[tool(
        description = "One job: its state, progress, position in the queue and why it waits, attempts, and history."
    )]
    async fn get_training_job(
        &self,
        Parameters(a): Parameters<JobArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = match job_id(&a.job_id) {
            Ok(id) => self.app.job(&caller, &id).await,
            Err(e) => Err(e),
        };
        answer(result, |j| {
            let why = j.waiting.as_ref().map(|w| format!(": {w}")).unwrap_or_default();
            format!("job {} ({}) is {}{why}", j.id, j.spec.name, j.state)
        })
    }

    #[tool(
        description = "List jobs, newest first: queued ones by default, with their position and why each waits. Pages with `before`."
    )]
    async fn list_queued_jobs(
        &self,
        Parameters(a): Parameters<ListArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = async {
            let state = match a.state.as_deref() {
                None => Some(common::JobState::Queued),
                Some("all") => None,
                Some(s) => Some(
                    s.parse()
                        .map_err(|e: String| AppError::bad_input(format!("state: {e}")))?,
                ),
            };
            let priority = a
                .priority
                .as_deref()
                .map(|p| {
                    p.parse()
                        .map_err(|e: String| AppError::bad_input(format!("priority: {e}")))
                })
                .transpose()?;
            let before = a
                .before
                .as_deref()
                .map(|c| {
                    c.parse()
                        .map_err(|e: String| AppError::bad_input(format!("before: {e}")))
                })
                .transpose()?;
            let limit = a.limit.unwrap_or(20);
            if limit == 0 || limit > 200 {
                return Err(AppError::bad_input("limit: must be 1 to 200"));
            }
            self.app
                .list(
                    &caller,
                    common::ListFilter {
                        state,
                        priority,
                        team: a.team,
                        before,
                        limit,
                        ..Default::default()
                    },
                )
                .await
        }
        .await;
        answer(result, |p| {
            format!(
                "{} jobs{}",
                p.jobs.len(),
                if p.next.is_some() {
                    " (more: pass before=next)"
                } else {
                    ""
                }
            )
        })
    }

    #[tool(
        description = "Queue depth, oldest wait and ETA per priority, and worker slots busy out of total."
    )]
    async fn get_queue_status(
        &self,
        Parameters(_): Parameters<NoArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = self.app.dashboard(&caller).await.map(|d| {
            serde_json::json!({"queues": d.queues, "capacity": d.capacity, "retrying": d.retrying, "dead": d.dead,
                "throughput_per_min": d.throughput_per_min})
        });
        answer(result, |v| {
            let depth: u64 = v["queues"]
                .as_array()
                .map(|q| q.iter().filter_map(|r| r["depth"].as_u64()).sum())
                .unwrap_or(0);
            format!(
                "{depth} jobs queued; {} of {} worker slots busy",
                v["capacity"]["busy"], v["capacity"]["total"]
            )
        })
    }

    #[tool(
        description = "Everything at once: queues, pools, teams against their quotas, workers, running jobs and recent failures."
    )]
    async fn get_training_dashboard(
        &self,
        Parameters(_): Parameters<NoArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        answer(self.app.dashboard(&caller).await, |d| {
            format!(
                "{} running, {} workers, {} recent failures",
                d.running.len(),
                d.workers.len(),
                d.recent_failures.len()
            )
        })
    }

    #[tool(
        description = "GPUs per pool: capacity, used, reserved for a preempting job, and free; and each live worker's GPUs."
    )]
    async fn get_gpu_availability(
        &self,
        Parameters(_): Parameters<NoArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = async {
            let q = self.app.quotas(&caller).await?;
            let workers = self.app.workers(&caller).await?;
            Ok(serde_json::json!({
                "pools": q.pools,
                "workers": workers.iter().map(|w| serde_json::json!({"id": w.id, "gpus": w.gpus, "jobs": w.jobs.len(), "slots": w.concurrency})).collect::<Vec<_>>(),
            }))
        }
        .await;
        answer(result, |v| {
            let pools = v["pools"].as_array().cloned().unwrap_or_default();
            let free: Vec<String> = pools
                .iter()
                .map(|p| {
                    format!(
                        "{}: {} free",
                        p["pool"].as_str().unwrap_or("?"),
                        p["free"].as_u64().map_or("unbounded".into(), |f| f.to_string())
                    )
                })
                .collect();
            if free.is_empty() {
                "no GPU pools configured".into()
            } else {
                free.join(", ")
            }
        })
    }

    #[tool(
        description = "A team's budgets this month (or the month given): amount, spent, committed by unfinished jobs, and the share used."
    )]
    async fn check_training_budget(
        &self,
        Parameters(a): Parameters<TeamArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let currency = self.app.pricing().pricing.currency();
        let result = self
            .app
            .budgets(&caller, a.month.as_deref(), a.team)
            .await
            .map(|budgets| Budgets { budgets });
        answer(result, |Budgets { budgets: b }| {
            if b.is_empty() {
                return "no budgets set".into();
            }
            b.iter()
                .map(|s| {
                    format!(
                        "{}: {} spent + {} committed of {}",
                        s.budget.team,
                        currency.format(cost::Money::from_micros(s.spent_micros)),
                        currency.format(cost::Money::from_micros(s.committed_micros)),
                        currency.format(cost::Money::from_micros(s.budget.amount_micros))
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    #[tool(description = "The projected total cost and end of a running job, from its epochs so far.")]
    async fn forecast_training_cost(
        &self,
        Parameters(a): Parameters<JobArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let currency = self.app.pricing().pricing.currency();
        let result = match job_id(&a.job_id) {
            Ok(id) => self.app.forecast(&caller, &id).await.map(|(f, _)| f),
            Err(e) => Err(e),
        };
        answer(result, |f| match f.projected_total {
            Some(t) => format!(
                "{} so far, about {} in total",
                currency.format(f.so_far),
                currency.format(t)
            ),
            None => format!(
                "{} so far; no projection until the first epoch completes",
                currency.format(f.so_far)
            ),
        })
    }

    #[tool(
        description = "What was spent over a period, grouped by team, model type, priority or job, with the trend against the period before."
    )]
    async fn get_training_cost_report(
        &self,
        Parameters(a): Parameters<ReportArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let currency = self.app.pricing().pricing.currency();
        let result = async {
            let since = a.since.as_deref().unwrap_or("30d");
            let ago = humantime::parse_duration(since)
                .map_err(|e| AppError::bad_input(format!("since {since:?}: {e}")))?;
            let req = ReportRequest {
                from: common::now_ms().saturating_sub(ago.as_millis() as u64),
                to: None,
                by: a.by.unwrap_or_else(|| "team".into()),
            };
            self.app.cost_report(&caller, &req).await
        }
        .await;
        answer(result, |r| {
            format!("{} over {} runs", currency.format(r.total.cost), r.total.runs)
        })
    }

    #[tool(
        description = "Price a job as given and with other batch sizes, GPU counts, spot and off-peak starts: time and cost of each, to pick the cheapest that fits."
    )]
    async fn compare_training_configs(
        &self,
        Parameters(a): Parameters<CompareArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let currency = self.app.pricing().pricing.currency();
        let result = match spec_of(&self.app, &caller, a.spec) {
            Ok(spec) => {
                self.app
                    .compare(&caller, &spec, &a.batch_sizes, &a.gpus, a.all_options)
                    .await
            }
            Err(e) => Err(e),
        };
        let result = result.map(|scenarios| Scenarios { scenarios });
        answer(result, |Scenarios { scenarios: rows }| {
            rows.iter()
                .map(|r| format!("{}: {}", r.scenario.label, currency.format(r.quote.total)))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    #[tool(
        description = "How a finished run could have cost less (batch size, spot, off-peak, early stopping), with the saving of each."
    )]
    async fn recommend_cost_optimization(
        &self,
        Parameters(a): Parameters<JobArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let currency = self.app.pricing().pricing.currency();
        let result = match job_id(&a.job_id) {
            Ok(id) => self.app.recommend(&caller, &id).await.map(
                |(cost, recs)| serde_json::json!({"cost": currency.format(cost), "recommendations": recs}),
            ),
            Err(e) => Err(e),
        };
        answer(result, |v| {
            let n = v["recommendations"].as_array().map_or(0, Vec::len);
            format!(
                "run cost {}; {n} recommendations",
                v["cost"].as_str().unwrap_or("")
            )
        })
    }

    #[tool(
        description = "Check a job spec without enqueueing it: is it valid, does its pool admit it, would it fit the team's budget, and what would it cost. Returns accepted and the problems, if any."
    )]
    async fn validate_job_resources(
        &self,
        Parameters(a): Parameters<SpecArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = match spec_of(&self.app, &caller, a.spec) {
            Ok(spec) => self.app.validate_job(&caller, spec).await,
            // A spec that does not parse is a problem to report, not a failure of the tool.
            Err(AppError::BadInput { message, .. }) => Ok(crate::app::Validation {
                accepted: false,
                problems: vec![message],
                warnings: Vec::new(),
                pool: String::new(),
                estimate: None,
            }),
            Err(e) => Err(e),
        };
        answer(result, |v| {
            let cost = v
                .estimate
                .as_ref()
                .map(|e| format!("; {}", e.line()))
                .unwrap_or_default();
            if v.accepted {
                format!("accepted in pool {}{cost}", v.pool)
            } else {
                format!("refused: {}{cost}", v.problems.join("; "))
            }
        })
    }

    #[tool(
        description = "A team's GPU usage in each pool against its quota (borrowed GPUs included), and its budgets this month."
    )]
    async fn check_training_quota(
        &self,
        Parameters(a): Parameters<TeamArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = async {
            let team = caller.team_filter(a.team)?;
            let q = self.app.quotas(&caller).await?;
            let teams: Vec<_> = q
                .teams
                .into_iter()
                .filter(|t| team.as_deref().is_none_or(|x| x == t.team))
                .collect();
            let budgets = self
                .app
                .budgets(&caller, a.month.as_deref(), team.clone())
                .await?;
            Ok(serde_json::json!({"team": team, "quotas": teams, "budgets": budgets}))
        }
        .await;
        answer(result, |v| {
            let rows = v["quotas"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                return "no quota rows: the team holds no GPUs and has no quota".into();
            }
            rows.iter()
                .map(|r| {
                    format!(
                        "{} in {}: {} GPUs of {}",
                        r["team"].as_str().unwrap_or(""),
                        r["pool"].as_str().unwrap_or(""),
                        r["used"],
                        r["nominal"]
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    #[tool(
        description = "Health: Redis and the job store answering, transitions waiting for the store, live workers, dead and retrying jobs, and recent failures."
    )]
    async fn get_training_health_status(
        &self,
        Parameters(_): Parameters<NoArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = self.app.dashboard(&caller).await.map(|d| {
            serde_json::json!({"health": d.health, "workers": d.workers.len(), "dead": d.dead, "retrying": d.retrying,
                "recent_failures": d.recent_failures})
        });
        answer(result, |v| {
            let ok = v["health"]["redis_ok"].as_bool() == Some(true)
                && v["health"]["store_ok"].as_bool() == Some(true);
            format!(
                "{}; {} workers, {} dead, {} retrying",
                if ok { "healthy" } else { "degraded" },
                v["workers"],
                v["dead"],
                v["retrying"]
            )
        })
    }

    #[tool(
        description = "Utilisation: GPUs used out of capacity per pool, each team's GPUs, and worker slots busy out of total."
    )]
    async fn get_resource_utilization_report(
        &self,
        Parameters(_): Parameters<NoArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Answer {
        let caller = self.caller(&ctx)?;
        let result = self.app.dashboard(&caller).await.map(|d| {
            let pools: Vec<_> = d
                .pools
                .iter()
                .map(|p| {
                    serde_json::json!({"pool": p.pool, "used": p.used, "capacity": p.capacity,
                    "utilisation": p.capacity.filter(|c| *c > 0).map(|c| p.used as f64 / c as f64)})
                })
                .collect();
            serde_json::json!({"pools": pools, "teams": d.teams, "slots": d.capacity})
        });
        answer(result, |v| {
            format!(
                "{} of {} worker slots busy",
                v["slots"]["busy"], v["slots"]["total"]
            )
        })
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("gpuq", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "GPU training jobs: price and validate a job (validate_job_resources, compare_training_configs), \
                 check the team's budget and quota, queue it, then follow it (get_training_job, list_queued_jobs).",
            )
    }
}

/// Serves the tools on stdin and stdout as `caller` until the client closes them.
pub async fn stdio(app: App, caller: Caller) -> crate::CliResult<()> {
    use rmcp::ServiceExt;
    let service = Tools::new(app, Some(caller))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| crate::CliError::Infra(format!("MCP on stdio: {e}")))?;
    service
        .waiting()
        .await
        .map_err(|e| crate::CliError::Infra(format!("MCP on stdio: {e}")))?;
    Ok(())
}
