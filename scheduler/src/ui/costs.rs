//! Costs: the month's spend against each budget as bars marked at the warn ratio, each
//! team's spend per day, and the cost report's totals with a CSV download. The same
//! `App` calls as `scheduler budget show`, `scheduler cost report` and the API.

use super::chart::{lines, Series, PALETTE};
use super::session::{NoSession, Session};
use super::{error_page, maud_response, page, part_response};
use crate::api::Api;
use crate::app::{AppError, DailySpend, Standing, DAY_MS};
use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use cost::{Money, Report};
use maud::{html, Markup};
use serde::Deserialize;

/// The period the page covers by default, in days.
const DEFAULT_DAYS: u32 = 30;

/// The page's query: what the report groups by and how many days it covers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    #[serde(default = "by_team")]
    by: String,
    #[serde(default)]
    days: Option<String>,
}

fn by_team() -> String {
    "team".into()
}

impl Query {
    fn parse(uri: &Uri) -> Result<(Query, u32), AppError> {
        let q: Query = serde_urlencoded::from_str(uri.query().unwrap_or_default())
            .map_err(|e| AppError::bad_input(format!("the costs page's query: {e}")))?;
        let days = match q.days.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_DAYS,
            Some(d) => d
                .parse()
                .map_err(|_| AppError::bad_input(format!("days {d:?}: not a whole number of days")))?,
        };
        Ok((q, days))
    }
}

/// What the page shows.
struct Costs {
    budgets: Vec<Standing>,
    spend: DailySpend,
    report: Report,
    by: String,
    days: u32,
}

impl Costs {
    /// The query that shows this page again (for its live part and its CSV).
    fn query(&self) -> String {
        serde_urlencoded::to_string([("by", self.by.as_str()), ("days", &self.days.to_string())])
            .unwrap_or_default()
    }
}

async fn gather(api: &Api, session: &Session, uri: &Uri) -> Result<Costs, AppError> {
    let (q, days) = Query::parse(uri)?;
    let (spend, report) = api.app.spend_and_report(&session.caller, days, &q.by).await?;
    let budgets = api.app.budgets(&session.caller, None, None).await?;
    Ok(Costs {
        budgets,
        spend,
        report,
        by: q.by,
        days,
    })
}

/// `GET /ui/costs`.
pub(super) async fn show(State(api): State<Api>, session: Result<Session, NoSession>, uri: Uri) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.into_response(),
    };
    match gather(&api, &session, &uri).await {
        Ok(c) => {
            let part = format!("/ui/costs.part?{}", c.query());
            maud_response(page(
                "Costs",
                Some(&session),
                html! {
                    (controls(&c))
                    (super::live(&part, body(&api, &c)))
                },
            ))
            .into_response()
        }
        Err(e) => error_page(Some(&session), &e),
    }
}

/// `GET /ui/costs.part`: the page's live part, or 304 when the browser has it.
pub(super) async fn part(
    State(api): State<Api>,
    session: Result<Session, NoSession>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.for_script(),
    };
    match gather(&api, &session, &uri).await {
        Ok(c) => part_response(&headers, body(&api, &c).into_string()),
        Err(e) => error_page(Some(&session), &e),
    }
}

/// `GET /ui/costs.csv`: the report as `scheduler cost report --csv` writes it.
pub(super) async fn csv(State(api): State<Api>, session: Result<Session, NoSession>, uri: Uri) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.into_response(),
    };
    match gather(&api, &session, &uri).await {
        Ok(c) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"gpuq-costs-by-{}-{}d.csv\"", c.by, c.days),
                ),
            ],
            c.report.to_csv(),
        )
            .into_response(),
        Err(e) => error_page(Some(&session), &e),
    }
}

fn controls(c: &Costs) -> Markup {
    let q = c.query();
    html! {
        section {
            form #period method="get" action="/ui/costs" {
                label { "report by " select name="by" {
                    @for by in ["team", "model-type", "priority"] { option value=(by) selected[c.by == by] { (by) } }
                } } " "
                label { "over the last " input name="days" value=(c.days) size="4"; " days" } " "
                button type="submit" { "Show" } " "
                a #csv href=(format!("/ui/costs.csv?{q}")) { "Download CSV" }
            }
        }
    }
}

/// A budget as a bar: spent, then committed (the estimates of unfinished jobs), on the
/// budget's amount, with a line at the warn ratio.
fn budget_bar(s: &Standing) -> Markup {
    const W: f64 = 240.0;
    let amount = s.budget.amount_micros.max(1) as f64;
    let spent = W * (s.spent_micros.max(0) as f64 / amount).min(1.0);
    let committed = (W * (s.committed_micros.max(0) as f64 / amount)).min(W - spent);
    let warn = W * s.budget.warn_ppm as f64 / 1e6;
    html! {
        svg.bar width=(W) height="14" role="img" aria-label="spent and committed against the budget" {
            rect.free x="0" y="0" width=(W) height="14" {}
            rect.spent x="0" y="0" width=(format!("{spent:.1}")) height="14" {}
            rect.committed x=(format!("{spent:.1}")) y="0" width=(format!("{committed:.1}")) height="14" {}
            line.warn x1=(format!("{warn:.1}")) y1="0" x2=(format!("{warn:.1}")) y2="14" {}
        }
    }
}

fn body(api: &Api, c: &Costs) -> Markup {
    let currency = api.app.pricing().pricing.currency();
    let money = |m: i64| currency.format(Money::from_micros(m));
    let series: Vec<Series> = c
        .spend
        .teams
        .iter()
        .zip(PALETTE.iter().cycle())
        .map(|((team, days), class)| Series {
            label: team,
            class,
            values: days.iter().map(|&m| m as f64 / 1e6).collect(),
        })
        .collect();
    // RFC 3339 times; their first ten characters are the UTC date.
    let first_day = crate::format::timestamp(c.spend.start_ms);
    let first_day = first_day.get(..10).unwrap_or_default();
    let last_day = crate::format::timestamp(c.spend.start_ms + (u64::from(c.days) - 1) * DAY_MS);
    let last_day = last_day.get(..10).unwrap_or_default();
    html! {
        section #budgets {
            h2 { "Budgets this month" }
            @if c.budgets.is_empty() { p.muted { "No budget is set (see scheduler budget set)." } }
            @else {
                table {
                    tr { th { "team" } th { "experiment" } th { "spent and committed" } th.num { "spent" } th.num { "committed" } th.num { "budget" } th.num { "spent %" } th.num { "warns at" } }
                    @for s in &c.budgets {
                        @let spent_ppm = s.spent_micros.max(0) as i128 * 1_000_000 / s.budget.amount_micros.max(1) as i128;
                        @let over = spent_ppm >= i128::from(s.budget.warn_ppm);
                        tr.budget.over-warn[over] data-team=(s.budget.team) data-spent-ppm=(spent_ppm) data-warn-ppm=(s.budget.warn_ppm) data-over-warn=(over) {
                            td { (s.budget.team) } td { (s.budget.experiment) }
                            td { (budget_bar(s)) }
                            td.num { (money(s.spent_micros)) } td.num { (money(s.committed_micros)) } td.num { (money(s.budget.amount_micros)) }
                            td.num.pct { (format!("{:.1}%", spent_ppm as f64 / 1e4)) }
                            td.num { (format!("{:.0}%", s.budget.warn_ppm as f64 / 1e4)) }
                        }
                    }
                }
            }
        }
        section #spend {
            h2 { "Spend per day by team, last " (c.days) " days" }
            @if series.is_empty() { p.muted { "Nothing was spent in this period." } }
            @else { (lines("spend-chart", &series, first_day, last_day, |top| currency.format(Money::from_micros((top * 1e6) as i64)))) }
        }
        section #report {
            h2 { "Report by " (c.by) ", last " (c.days) " days" }
            table {
                tr { th { (c.by) } th.num { "cost" } th.num { "runs" } th.num { "average" } th.num { "previous period" } th.num { "change" } th { "most expensive job" } }
                @for l in c.report.lines.iter().chain([&c.report.total]) {
                    tr.total[l.group == c.report.total.group] {
                        td { (l.group) } td.num { (currency.format(l.cost)) } td.num { (l.runs) }
                        td.num { (currency.format(l.avg_cost)) } td.num { (currency.format(l.previous_cost)) }
                        td.num { @if let Some(p) = l.change_pct { (format!("{p:+.1}%")) } @else { "–" } }
                        td { @if let Some(id) = &l.top_job { a href=(format!("/ui/jobs/{id}")) { code { (id.as_str()) } } } }
                    }
                }
            }
        }
    }
}
