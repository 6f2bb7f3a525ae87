//! Cost reports: totals, run counts and averages per team, model type or priority over a
//! period, with the change against the period of the same length just before it.
//!
//! Pure aggregation over rows the caller reads from the job store, so the same rows always
//! give the same report. A row counts in the period its job finished in (`[from, to)`).

use crate::money::{div_round, Money};
use chrono::{DateTime, Utc};
use common::{JobId, Priority};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One finished job's cost (all its attempts), as the caller reads it from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostRow {
    /// The job.
    pub job_id: JobId,
    /// Its team.
    pub team: String,
    /// Its model type.
    pub model_type: String,
    /// Its priority.
    pub priority: Priority,
    /// Actual cost of all its attempts.
    pub cost: Money,
    /// Wall-clock seconds of all its attempts.
    pub run_secs: u64,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Whether it ended as a preemption victim (handed back, not counted).
    pub preempted: bool,
    /// For a victim: GPU ms it lost since its last checkpoint.
    pub lost_gpu_ms: u64,
    /// What those cost (part of `cost`).
    pub lost: Money,
}

/// What a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupBy {
    /// `team`.
    Team,
    /// `model-type`.
    ModelType,
    /// `priority` (shown as urgent, normal, background).
    Priority,
}

impl GroupBy {
    fn key(self, row: &CostRow) -> String {
        match self {
            GroupBy::Team => row.team.clone(),
            GroupBy::ModelType => row.model_type.clone(),
            GroupBy::Priority => row.priority.alias().to_string(),
        }
    }
}

impl FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<GroupBy, String> {
        match s {
            "team" => Ok(GroupBy::Team),
            "model-type" | "model_type" => Ok(GroupBy::ModelType),
            "priority" => Ok(GroupBy::Priority),
            _ => Err(format!("cannot group by {s:?}; use team, model-type or priority")),
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupBy::Team => "team",
            GroupBy::ModelType => "model-type",
            GroupBy::Priority => "priority",
        })
    }
}

/// The figures of one group, or of the whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportLine {
    /// The group's key (team, model type or priority); `(total)` for the total line.
    pub group: String,
    /// Cost in the period.
    pub cost: Money,
    /// Jobs finished in the period.
    pub runs: u64,
    /// `cost / runs`, rounded (zero without runs).
    pub avg_cost: Money,
    /// Mean run seconds, rounded (zero without runs).
    pub avg_run_secs: u64,
    /// Cost in the previous period of the same length.
    pub previous_cost: Money,
    /// Change against the previous period in percent, to 0.1; `None` when the previous
    /// period cost nothing, where no percentage means anything.
    pub change_pct: Option<f64>,
    /// The most expensive job of the period.
    pub top_job: Option<JobId>,
}

/// A cost report over `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What the lines group by.
    pub group_by: GroupBy,
    /// Start of the period (inclusive).
    pub from: DateTime<Utc>,
    /// End of the period (exclusive).
    pub to: DateTime<Utc>,
    /// Start of the previous period, which ends at `from`.
    pub previous_from: DateTime<Utc>,
    /// One line per group with cost in either period, most expensive first.
    pub lines: Vec<ReportLine>,
    /// All groups together.
    pub total: ReportLine,
    /// What preemptions cost in the period: work lost since the victims' last checkpoints
    /// (already part of the lines above, which bill every attempt).
    pub preemption: PreemptionLosses,
}

/// The period's preemption losses.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PreemptionLosses {
    /// Attempts stopped as preemption victims.
    pub attempts: u64,
    /// GPU hours they lost since their last checkpoints.
    pub lost_gpu_hours: f64,
    /// What those hours cost.
    pub cost: Money,
}

/// Totals being accumulated for one group.
#[derive(Default)]
struct Acc {
    cost: Money,
    runs: u64,
    secs: u64,
    previous: Money,
    top: Option<(Money, JobId)>,
}

impl Acc {
    fn add(&mut self, row: &CostRow, current: bool) {
        if !current {
            self.previous += row.cost;
            return;
        }
        self.cost += row.cost;
        self.runs += 1;
        self.secs += row.run_secs;
        let beats = |(cost, id): &(Money, JobId)| (row.cost, &row.job_id) > (*cost, id);
        if self.top.as_ref().is_none_or(beats) {
            self.top = Some((row.cost, row.job_id.clone()));
        }
    }

    fn line(self, group: String) -> ReportLine {
        let avg = |total: i128| {
            if self.runs == 0 {
                0
            } else {
                div_round(total, self.runs as i128)
            }
        };
        let change_pct = (self.previous.micros() > 0).then(|| {
            let delta = (self.cost - self.previous).micros() as i128;
            div_round(delta * 1000, self.previous.micros() as i128) as f64 / 10.0
        });
        ReportLine {
            group,
            cost: self.cost,
            runs: self.runs,
            avg_cost: Money::from_wide(avg(self.cost.micros() as i128)),
            avg_run_secs: avg(self.secs as i128) as u64,
            previous_cost: self.previous,
            change_pct,
            top_job: self.top.map(|(_, id)| id),
        }
    }
}

/// Aggregates `rows` finished in `[from, to)` by `group_by`, against the previous period
/// `[from − (to − from), from)`. Rows outside both periods are ignored.
pub fn report(rows: &[CostRow], from: DateTime<Utc>, to: DateTime<Utc>, group_by: GroupBy) -> Report {
    let previous_from = from
        .checked_sub_signed(to - from)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    let mut total = Acc::default();
    let mut preemption = PreemptionLosses::default();
    let mut lost_ms = 0u64;
    for row in rows {
        let current = (from..to).contains(&row.finished_at);
        if !current && !(previous_from..from).contains(&row.finished_at) {
            continue;
        }
        if current && row.preempted {
            preemption.attempts += 1;
            preemption.cost += row.lost;
            lost_ms += row.lost_gpu_ms;
        }
        groups.entry(group_by.key(row)).or_default().add(row, current);
        total.add(row, current);
    }
    let mut lines: Vec<ReportLine> = groups.into_iter().map(|(k, acc)| acc.line(k)).collect();
    lines.sort_by(|a, b| b.cost.cmp(&a.cost).then_with(|| a.group.cmp(&b.group)));
    Report {
        group_by,
        from,
        to,
        previous_from,
        lines,
        total: total.line("(total)".into()),
        preemption: PreemptionLosses {
            lost_gpu_hours: (lost_ms as f64 / 3_600_000.0 * 1000.0).round() / 1000.0,
            ..preemption
        },
    }
}

impl Report {
    /// The report as CSV (RFC 4180): a header, one row per group, then the total. Money
    /// is written as exact decimals, a missing percentage as an empty field.
    pub fn to_csv(&self) -> String {
        let mut out =
            String::from("group,cost,runs,avg_cost,avg_run_secs,previous_cost,change_pct,top_job\r\n");
        for line in self.lines.iter().chain([&self.total]) {
            let fields = [
                line.group.clone(),
                line.cost.to_string(),
                line.runs.to_string(),
                line.avg_cost.to_string(),
                line.avg_run_secs.to_string(),
                line.previous_cost.to_string(),
                line.change_pct.map_or(String::new(), |p| format!("{p:.1}")),
                line.top_job.as_ref().map_or(String::new(), |id| id.to_string()),
            ];
            let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&quoted.join(","));
            out.push_str("\r\n");
        }
        // Its own line: part of the costs above, not added to them.
        out.push_str(&format!(
            "(preemption losses),{},{},,,,,\r\n",
            self.preemption.cost, self.preemption.attempts
        ));
        out
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::tests::at;

    fn row(id: &str, team: &str, model: &str, prio: Priority, cost: &str, secs: u64, day: u32) -> CostRow {
        CostRow {
            job_id: id.parse().unwrap(),
            team: team.into(),
            model_type: model.into(),
            priority: prio,
            cost: Money::parse(cost).unwrap(),
            run_secs: secs,
            finished_at: at(2024, 5, day, 12, 0),
            preempted: false,
            lost_gpu_ms: 0,
            lost: Money::default(),
        }
    }

    fn rows() -> Vec<CostRow> {
        use Priority::*;
        vec![
            // Current period: May 8 to 15.
            row("a", "vision", "resnet", Urgent, "30", 100, 8),
            row("b", "vision", "resnet", Normal, "10", 200, 9),
            row("c", "vision", "vit", Normal, "20", 301, 14),
            row("d", "search", "bert", Background, "5", 60, 10),
            row("e", "nlp", "bert", Normal, "7", 70, 12),
            // Previous period: May 1 to 8.
            row("p1", "vision", "resnet", Normal, "40", 100, 1),
            row("p2", "search", "bert", Normal, "4", 100, 7),
            row("p3", "ads", "gpt", Normal, "9", 100, 3),
            // Outside both.
            row("old", "vision", "resnet", Normal, "1000", 1, 30),
        ]
    }

    fn by(group: GroupBy) -> Report {
        let r = rows();
        report(&r[..8], at(2024, 5, 8, 0, 0), at(2024, 5, 15, 0, 0), group)
    }

    #[test]
    fn totals_averages_and_trend_by_team() {
        let r = by(GroupBy::Team);
        assert_eq!(r.previous_from, at(2024, 5, 1, 0, 0));
        let groups: Vec<&str> = r.lines.iter().map(|l| l.group.as_str()).collect();
        assert_eq!(groups, ["vision", "nlp", "search", "ads"]);
        let vision = &r.lines[0];
        assert_eq!(vision.cost, Money::parse("60").unwrap());
        assert_eq!(vision.runs, 3);
        assert_eq!(vision.avg_cost, Money::parse("20").unwrap());
        assert_eq!(vision.avg_run_secs, 200); // (100 + 200 + 301) / 3 = 200.33
        assert_eq!(vision.previous_cost, Money::parse("40").unwrap());
        assert_eq!(vision.change_pct, Some(50.0));
        assert_eq!(vision.top_job.as_ref().map(JobId::as_str), Some("a"));
        // No spend before: no percentage.
        assert_eq!(r.lines[1].change_pct, None);
        // 5 against 4: +25%. Spend only before: -100%.
        assert_eq!(r.lines[2].change_pct, Some(25.0));
        let ads = &r.lines[3];
        assert_eq!(
            (ads.runs, ads.avg_cost, ads.change_pct),
            (0, Money::ZERO, Some(-100.0))
        );
        let total = &r.total;
        assert_eq!((total.cost, total.runs), (Money::parse("72").unwrap(), 5));
        assert_eq!(total.avg_cost, Money::parse("14.4").unwrap());
        // 72 against 53: +35.849…% → 35.8.
        assert_eq!(
            (total.previous_cost, total.change_pct),
            (Money::parse("53").unwrap(), Some(35.8))
        );
    }

    #[test]
    fn groups_by_model_type_and_priority() {
        let r = by(GroupBy::ModelType);
        let costs: Vec<(&str, String)> = r
            .lines
            .iter()
            .map(|l| (l.group.as_str(), l.cost.to_string()))
            .collect();
        assert_eq!(
            costs,
            [
                ("resnet", "40.00".into()),
                ("vit", "20.00".into()),
                ("bert", "12.00".into()),
                ("gpt", "0.00".into())
            ]
        );
        let r = by(GroupBy::Priority);
        let runs: Vec<(&str, u64)> = r.lines.iter().map(|l| (l.group.as_str(), l.runs)).collect();
        assert_eq!(runs, [("normal", 3), ("urgent", 1), ("background", 1)]);
        assert_eq!("model-type".parse::<GroupBy>(), Ok(GroupBy::ModelType));
        assert!("colour".parse::<GroupBy>().is_err());
    }

    #[test]
    fn period_edges_are_half_open() {
        let mut r = rows();
        r[0].finished_at = at(2024, 5, 8, 0, 0); // exactly `from`: current
        r[1].finished_at = at(2024, 5, 15, 0, 0); // exactly `to`: ignored
        let rep = report(&r, at(2024, 5, 8, 0, 0), at(2024, 5, 15, 0, 0), GroupBy::Team);
        assert_eq!(rep.total.runs, 4);
    }

    #[test]
    fn preemption_losses_are_their_own_line_within_the_totals() {
        let mut rs = rows();
        let mut victim = row("v", "search", "bert", Priority::Background, "6", 600, 11);
        victim.preempted = true;
        victim.lost_gpu_ms = 2 * 1_800_000;
        victim.lost = Money::parse("1.50").unwrap();
        rs.push(victim);
        // Outside the period: not counted.
        let mut old = row("w", "search", "bert", Priority::Background, "6", 600, 2);
        old.preempted = true;
        old.lost = Money::parse("9").unwrap();
        rs.push(old);
        let r = report(&rs, at(2024, 5, 8, 0, 0), at(2024, 5, 15, 0, 0), GroupBy::Team);
        assert_eq!(
            r.total.cost,
            Money::parse("78").unwrap(),
            "the attempt is billed as any"
        );
        assert_eq!(
            r.preemption,
            PreemptionLosses {
                attempts: 1,
                lost_gpu_hours: 1.0,
                cost: Money::parse("1.50").unwrap()
            }
        );
        assert!(r.to_csv().ends_with("(preemption losses),1.50,1,,,,,\r\n"));
    }

    #[test]
    fn serializes_to_json_and_csv() {
        let r = by(GroupBy::Team);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["group_by"], "team");
        assert_eq!(json["lines"][0]["cost"], "60.00");
        assert_eq!(json["lines"][1]["change_pct"], serde_json::Value::Null);
        let csv = r.to_csv();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "group,cost,runs,avg_cost,avg_run_secs,previous_cost,change_pct,top_job"
        );
        assert_eq!(lines[1], "vision,60.00,3,20.00,200,40.00,50.0,a");
        assert_eq!(lines[2], "nlp,7.00,1,7.00,70,0.00,,e");
        assert_eq!(lines[5], "(total),72.00,5,14.40,146,53.00,35.8,a");
        assert_eq!(lines[6], "(preemption losses),0.00,0,,,,,");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
