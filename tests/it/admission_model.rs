//! A model of admission in plain Rust, driven side by side with the scripts on a real
//! Redis by random operations (proptest): enqueue, claims by workers with random free
//! GPUs and pools, finish, fail, kill and reap, release, cancel, and quota changes. After
//! every step both must agree on what each claim admitted, on the usage, and on every
//! queued job's reason and position.
//!
//! The model is written from the rules (ARCHITECTURE.md, "Admission"), not from the
//! script's code paths: queues per priority and pool, parked lanes per team and group,
//! the order in which a claim looks at them, and the checks of `admit_reason`.

use crate::support::TestEnv;
use common::admission::{AdmissionConfig, PoolConfig, Quota, Strategy as Order, TeamLimits, WaitReason};
use common::queue::{EndedAttempt, Lease, Outcome, Room, Waiting};
use common::{JobId, JobSpec, Priority, WorkerId, WorkerInfo};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

const TEAMS: [&str; 3] = ["a", "b", "c"];
const POOLS: [&str; 2] = ["default", "x"];
const DEPTH: usize = 16;

#[derive(Debug, Clone)]
struct JobTemplate {
    team: usize,
    pool: usize,
    gpus: u32,
    group: bool,
    priority: usize,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(Vec<JobTemplate>),
    Claim {
        worker: usize,
        max: usize,
        free: Option<u32>,
        pool: Option<usize>,
    },
    Finish {
        worker: usize,
        pick: usize,
        ok: bool,
    },
    Release {
        worker: usize,
        pick: usize,
    },
    Reap {
        worker: usize,
    },
    Cancel {
        pick: usize,
    },
    Configure(AdmissionConfig),
}

fn template() -> impl Strategy<Value = JobTemplate> {
    (
        0..3usize,
        0..2usize,
        prop_oneof![Just(0u32), 1..=4u32],
        proptest::bool::weighted(0.2),
        0..3usize,
    )
        .prop_map(|(team, pool, gpus, group, priority)| JobTemplate {
            team,
            pool,
            gpus,
            group,
            priority,
        })
}

fn config() -> impl Strategy<Value = AdmissionConfig> {
    let quota = (
        0..=4u32,
        proptest::option::of(0..=3u32),
        proptest::option::of(0..=4u32),
        proptest::bool::ANY,
    )
        .prop_map(|(nominal, borrowing_limit, lending, cohort)| Quota {
            nominal,
            borrowing_limit,
            lending_limit: lending.map(|l| l.min(nominal)),
            cohort: cohort.then(|| "other".to_string()),
        });
    let pool = (
        proptest::option::of(0..=10u32),
        proptest::option::of(1..=4u32),
        proptest::bool::ANY,
        proptest::bool::weighted(0.3),
        proptest::collection::btree_map(0..3usize, quota, 0..=3),
    )
        .prop_map(
            |(capacity, max_running, strict, reserve_now, quotas)| PoolConfig {
                capacity,
                max_running,
                strategy: if strict { Order::Strict } else { Order::BestEffort },
                reserve_after_secs: Some(if reserve_now { 0 } else { 3600 }),
                quotas: quotas
                    .into_iter()
                    .map(|(t, q)| (TEAMS[t].to_string(), q))
                    .collect(),
            },
        );
    (
        proptest::option::of(1..=8u32),
        proptest::option::of((0..3usize, 1..=3u32)),
        proptest::collection::btree_map(0..2usize, pool, 0..=2),
    )
        .prop_map(|(max_running, team_cap, pools)| AdmissionConfig {
            max_running,
            allowed_teams: None,
            teams: team_cap
                .map(|(t, m)| {
                    (
                        TEAMS[t].to_string(),
                        TeamLimits {
                            max_running: Some(m),
                            ..TeamLimits::default()
                        },
                    )
                })
                .into_iter()
                .collect(),
            pools: pools
                .into_iter()
                .map(|(p, c)| (POOLS[p].to_string(), c))
                .collect(),
            ..AdmissionConfig::default()
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(template(), 1..6).prop_map(Op::Enqueue),
        5 => (0..3usize, 1..6usize, proptest::option::of(0..=6u32), proptest::option::of(0..2usize))
            .prop_map(|(worker, max, free, pool)| Op::Claim { worker, max, free, pool }),
        3 => (0..3usize, 0..8usize, proptest::bool::weighted(0.8)).prop_map(|(worker, pick, ok)| Op::Finish { worker, pick, ok }),
        1 => (0..3usize, 0..8usize).prop_map(|(worker, pick)| Op::Release { worker, pick }),
        1 => (0..3usize).prop_map(|worker| Op::Reap { worker }),
        1 => (0..40usize).prop_map(|pick| Op::Cancel { pick }),
        1 => config().prop_map(Op::Configure),
    ]
}

// ---------------------------------------------------------------- the model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    Running,
    Done,
}

#[derive(Debug, Clone)]
struct MJob {
    id: String,
    pri: usize,
    pool: String,
    team: String,
    gpus: u32,
    group: String,
    state: State,
    attempt: u32,
    cancel: bool,
    blocked: bool,
    /// Which enqueue call created it (the scripts order lanes by the head's enqueue time).
    born: usize,
}

/// Priority, pool, team, group, and whether its jobs need GPUs.
type LaneKey = (usize, String, String, String, bool);

#[derive(Debug, Default)]
struct Model {
    config: AdmissionConfig,
    jobs: HashMap<String, MJob>,
    queues: BTreeMap<(usize, String), Vec<String>>,
    lanes: BTreeMap<LaneKey, Vec<String>>,
    usage: BTreeMap<String, i64>,
    groups: HashMap<String, u32>,
    reservation: HashMap<String, (String, usize)>,
    known_pools: BTreeSet<String>,
    /// Per worker slot: its leases as (job, claim sequence).
    leases: Vec<Vec<(String, u64)>>,
    seq: u64,
    enqueues: usize,
}

fn charge_fields(j: &MJob) -> Vec<(String, i64)> {
    let mut f = vec![
        ("j".to_string(), 1),
        (format!("t|{}", j.team), 1),
        (format!("j|{}", j.pool), 1),
        (format!("j|{}|{}", j.pool, j.team), 1),
    ];
    if j.gpus > 0 {
        f.push((format!("g|{}", j.pool), i64::from(j.gpus)));
        f.push((format!("g|{}|{}", j.pool, j.team), i64::from(j.gpus)));
    }
    if !j.group.is_empty() {
        f.push((format!("grp|{}", j.group), 1));
    }
    f
}

/// What admission reads during one claim: the usage as it grows, and the reservations.
struct Ctx {
    usage: BTreeMap<String, i64>,
}

impl Ctx {
    fn used(&self, f: &str) -> i64 {
        self.usage.get(f).copied().unwrap_or(0)
    }
}

impl Model {
    fn add(usage: &mut BTreeMap<String, i64>, j: &MJob, sign: i64) {
        for (f, d) in charge_fields(j) {
            let v = usage.entry(f.clone()).or_insert(0);
            *v += sign * d;
            if *v == 0 {
                usage.remove(&f);
            }
        }
    }

    fn lane_key(j: &MJob) -> LaneKey {
        (j.pri, j.pool.clone(), j.team.clone(), j.group.clone(), j.gpus > 0)
    }

    fn lane_parked(&self, key: &LaneKey) -> bool {
        self.lanes.get(key).is_some_and(|l| !l.is_empty())
    }

    fn requeue(&mut self, id: &str, head: bool) {
        let j = &self.jobs[id];
        let key = Self::lane_key(j);
        let pool = j.pool.clone();
        let list = if self.lane_parked(&key) {
            self.lanes.get_mut(&key).unwrap()
        } else {
            self.queues.entry((j.pri, j.pool.clone())).or_default()
        };
        if head {
            list.insert(0, id.to_string());
        } else {
            list.push(id.to_string());
        }
        if pool != "default" {
            self.known_pools.insert(pool);
        }
    }

    fn capacity(&self, pool: &str) -> i64 {
        self.config
            .pools
            .get(pool)
            .and_then(|p| p.capacity)
            .map_or(0, i64::from)
    }

    /// The reservation of a pool, dropping one whose job is no longer queued.
    fn reservation(&mut self, pool: &str) -> Option<(String, usize)> {
        // Only a configured pool has reservations; one made while it was configured
        // stays stored, and counts again if the pool is configured again.
        if !self.config.pools.contains_key(pool) {
            return None;
        }
        let r = self.reservation.get(pool).cloned()?;
        if self.jobs.get(&r.0).is_some_and(|j| j.state == State::Queued) {
            Some(r)
        } else {
            self.reservation.remove(pool);
            None
        }
    }

    fn quota_reason(&self, ctx: &Ctx, pool: &str, team: &str, gpus: i64, no_borrow: bool) -> Option<Reason> {
        let pc = self.config.pools.get(pool)?;
        if pc.quotas.is_empty() {
            return None;
        }
        let cap = self.capacity(pool);
        struct E {
            nominal: i64,
            borrowing: Option<i64>,
            lending: Option<i64>,
            cohort: String,
            used: i64,
        }
        let mut entries: BTreeMap<String, E> = BTreeMap::new();
        let (mut assigned, mut configured) = (0, 0);
        for (t, q) in &pc.quotas {
            let u = ctx.used(&format!("g|{pool}|{t}"));
            entries.insert(
                t.clone(),
                E {
                    nominal: i64::from(q.nominal),
                    borrowing: q.borrowing_limit.map(i64::from),
                    lending: q.lending_limit.map(i64::from),
                    cohort: q.cohort.clone().unwrap_or_default(),
                    used: u,
                },
            );
            assigned += i64::from(q.nominal);
            configured += u;
        }
        entries.insert(
            "*".into(),
            E {
                nominal: (cap - assigned).max(0),
                borrowing: Some(0),
                lending: None,
                cohort: String::new(),
                used: ctx.used(&format!("g|{pool}")) - configured,
            },
        );
        let key = if pc.quotas.contains_key(team) { team } else { "*" };
        let e = &entries[key];
        if e.used + gpus <= e.nominal {
            return None;
        }
        let limit = e.borrowing.unwrap_or(-1);
        if limit >= 0 && e.used + gpus - e.nominal > limit {
            return Some(Reason::Wait(WaitReason::Quota {
                team: team.into(),
                pool: pool.into(),
                used: e.used.max(0) as u64,
                nominal: e.nominal.max(0) as u64,
                borrowing_limit: (limit >= 0).then_some(limit as u64),
                lendable: 0,
            }));
        }
        let (mut total, mut used, mut kept) = (0, 0, 0);
        for (t, m) in &entries {
            if m.cohort == e.cohort {
                total += m.nominal;
                used += m.used;
                if t != key {
                    if let Some(l) = m.lending {
                        kept += ((m.nominal - l) - m.used).max(0);
                    }
                }
            }
        }
        let lendable = total - used - kept;
        if gpus > lendable {
            return Some(Reason::Wait(WaitReason::Quota {
                team: team.into(),
                pool: pool.into(),
                used: e.used.max(0) as u64,
                nominal: e.nominal.max(0) as u64,
                borrowing_limit: (limit >= 0).then_some(limit as u64),
                lendable: lendable.max(0) as u64,
            }));
        }
        if no_borrow {
            return Some(Reason::Borrowing);
        }
        None
    }

    fn admit_reason(
        &mut self,
        ctx: &Ctx,
        id: &str,
        pri: usize,
        (pool, team, gpus, group): (&str, &str, u32, &str),
        no_borrow: bool,
    ) -> Option<Reason> {
        let n = |v: i64| v.max(0) as u64;
        if let Some(&cap) = (!group.is_empty()).then(|| self.groups.get(group)).flatten() {
            let running = ctx.used(&format!("grp|{group}"));
            if running >= i64::from(cap) {
                return Some(Reason::Wait(WaitReason::Group {
                    group: group.into(),
                    running: n(running),
                    max_running: u64::from(cap),
                }));
            }
        }
        if let Some(m) = self.config.teams.get(team).and_then(|t| t.max_running) {
            let running = ctx.used(&format!("t|{team}"));
            if running >= i64::from(m) {
                return Some(Reason::Wait(WaitReason::TeamCap {
                    team: team.into(),
                    running: n(running),
                    max_running: u64::from(m),
                }));
            }
        }
        if let Some(m) = self.config.max_running {
            if ctx.used("j") >= i64::from(m) {
                return Some(Reason::Wait(WaitReason::GlobalCap {
                    running: n(ctx.used("j")),
                    max_running: u64::from(m),
                }));
            }
        }
        let pc = self.config.pools.get(pool)?.clone();
        if let Some(m) = pc.max_running {
            let running = ctx.used(&format!("j|{pool}"));
            if running >= i64::from(m) {
                return Some(Reason::Wait(WaitReason::PoolCap {
                    pool: pool.into(),
                    running: n(running),
                    max_running: u64::from(m),
                }));
            }
        }
        if gpus == 0 {
            return None;
        }
        if let Some((rid, rpri)) = self.reservation(pool) {
            if rid != id && rpri <= pri {
                return Some(Reason::Wait(WaitReason::Reserved {
                    pool: pool.into(),
                    job: rid,
                }));
            }
        }
        if let Some(q) = self.quota_reason(ctx, pool, team, i64::from(gpus), no_borrow) {
            return Some(q);
        }
        let cap = self.capacity(pool);
        let used = ctx.used(&format!("g|{pool}"));
        if used + i64::from(gpus) > cap {
            return Some(Reason::Wait(WaitReason::PoolFull {
                pool: pool.into(),
                used: n(used),
                capacity: n(cap),
                needs: u64::from(gpus),
            }));
        }
        None
    }

    fn strict(&self, pool: &str) -> bool {
        self.config
            .pools
            .get(pool)
            .is_some_and(|p| p.strategy == Order::Strict)
    }

    fn depth(&self, pri: usize, pool: &str) -> usize {
        let q = self.queues.get(&(pri, pool.to_string())).map_or(0, Vec::len);
        let l: usize = self
            .lanes
            .iter()
            .filter(|((p, po, _, _, _), _)| *p == pri && po == pool)
            .map(|(_, v)| v.len())
            .sum();
        q + l
    }

    /// What `why.lua` answers for a queued job.
    fn waiting(&mut self, id: &str) -> Waiting {
        let j = self.jobs[id].clone();
        let ahead: usize = (0..j.pri).map(|p| self.depth(p, &j.pool)).sum();
        let own = self
            .queues
            .get(&(j.pri, j.pool.clone()))
            .and_then(|q| q.iter().position(|x| x == id))
            .or_else(|| {
                self.lanes
                    .get(&Self::lane_key(&j))
                    .and_then(|l| l.iter().position(|x| x == id))
            });
        let position = own.map(|o| (ahead + o) as u64);
        let ctx = Ctx {
            usage: self.usage.clone(),
        };
        let reason = match self.admit_reason(&ctx, id, j.pri, (&j.pool, &j.team, j.gpus, &j.group), false) {
            Some(Reason::Wait(w)) => w,
            Some(Reason::Borrowing) => unreachable!("only the claim's first pass asks"),
            None if position.is_some_and(|p| p > 0) => WaitReason::Behind {
                ahead: position.unwrap_or(0),
            },
            None => WaitReason::Worker {
                pool: j.pool.clone(),
                gpus: u64::from(j.gpus),
            },
        };
        Waiting { position, reason }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Reason {
    Wait(WaitReason),
    Borrowing,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Take,
    Skip,
    Park,
    Stop,
    End,
    Stale,
}

/// One claim call of the model.
struct Claiming<'m> {
    m: &'m mut Model,
    ctx: Ctx,
    want: usize,
    free: Option<i64>,
    leased: Vec<String>,
    stopped: BTreeSet<String>,
    all_stopped: bool,
    /// What makes the claim run its second pass over a pool's lanes (claim.lua): a job
    /// that would borrow, a reservation that ended, or a lane that moved.
    borrowers: bool,
    moved: bool,
}

impl Claiming<'_> {
    fn held_up(&mut self, id: &str, pri: usize, pool: &str) {
        self.m.jobs.get_mut(id).unwrap().blocked = true;
        let Some(pc) = self.m.config.pools.get(pool) else {
            return;
        };
        let after = pc.reserve_after_secs.unwrap_or(600);
        if self.m.reservation(pool).is_none() && after == 0 {
            self.m.reservation.insert(pool.to_string(), (id.to_string(), pri));
        }
    }

    fn decide(&mut self, id: &str, pri: usize, pool: &str, no_borrow: bool) -> Decision {
        let j = self.m.jobs[id].clone();
        if j.state != State::Queued {
            return Decision::Stale;
        }
        let why = self.m.admit_reason(
            &self.ctx,
            id,
            pri,
            (&j.pool, &j.team, j.gpus, &j.group),
            no_borrow,
        );
        let Some(why) = why else {
            if self.free.is_none_or(|f| i64::from(j.gpus) <= f) {
                return Decision::Take;
            }
            if j.gpus > 0 {
                self.held_up(id, pri, pool);
            }
            return Decision::Skip;
        };
        let code = match &why {
            Reason::Borrowing => {
                self.borrowers = true;
                return Decision::Skip;
            }
            Reason::Wait(w) => w.code(),
        };
        match code {
            "global_cap" => return Decision::End,
            "pool_cap" => return Decision::Stop,
            "pool_full" => self.held_up(id, pri, pool),
            _ => {}
        }
        if matches!(code, "pool_full" | "reserved") && self.m.strict(pool) {
            return Decision::Stop;
        }
        Decision::Park
    }

    fn take(&mut self, id: &str, pool: &str) {
        let j = self.m.jobs.get_mut(id).unwrap();
        j.state = State::Running;
        j.attempt += 1;
        j.blocked = false;
        let j = j.clone();
        Model::add(&mut self.ctx.usage, &j, 1);
        if let Some(f) = self.free.as_mut() {
            *f -= i64::from(j.gpus);
        }
        if self.m.reservation(pool).is_some_and(|(r, _)| r == id) {
            self.m.reservation.remove(pool);
            self.borrowers = true;
        }
        self.leased.push(id.to_string());
    }

    fn take_from_lanes(&mut self, pri: usize, pool: &str, no_borrow: bool) {
        let members: Vec<LaneKey> = self
            .m
            .lanes
            .keys()
            .filter(|(p, po, _, _, _)| *p == pri && po == pool)
            .cloned()
            .collect();
        if members.is_empty() {
            return;
        }
        let mut lanes = Vec::new();
        for key in members {
            // Checked for the least its jobs need: one GPU in a GPU lane.
            let least = u32::from(key.4);
            let why = self
                .m
                .admit_reason(&self.ctx, "", pri, (pool, &key.2, least, &key.3), no_borrow);
            let code = why.as_ref().map(|w| match w {
                Reason::Wait(w) => w.code(),
                Reason::Borrowing => "borrowing",
            });
            let only_head = matches!(code, Some("pool_full" | "reserved"));
            if code == Some("borrowing") {
                self.borrowers = true;
            }
            match code {
                Some("global_cap") => {
                    self.all_stopped = true;
                    return;
                }
                Some("pool_cap") => {
                    self.stopped.insert(pool.to_string());
                    return;
                }
                Some(_) if !only_head => {}
                _ => {
                    let head = &self.m.lanes[&key][0];
                    let born = self.m.jobs[head].born;
                    let member = format!("{}:{}:{}", key.2, key.3, if key.4 { "g" } else { "c" });
                    lanes.push((born, member, key, only_head));
                }
            }
        }
        lanes.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (_, _, key, only_head) in lanes {
            let depth = if self.m.strict(pool) || only_head {
                1
            } else {
                DEPTH
            };
            if self.leased.len() >= self.want || self.stopped.contains(pool) || self.all_stopped {
                return;
            }
            let ids: Vec<String> = self.m.lanes[&key].iter().take(depth).cloned().collect();
            let mut gone = Vec::new();
            for id in ids {
                if self.leased.len() >= self.want {
                    break;
                }
                match self.decide(&id, pri, pool, no_borrow) {
                    Decision::Take => {
                        self.take(&id, pool);
                        gone.push(id);
                    }
                    Decision::Stale => gone.push(id),
                    Decision::End => {
                        self.all_stopped = true;
                        break;
                    }
                    Decision::Stop => {
                        self.stopped.insert(pool.to_string());
                        break;
                    }
                    _ if depth == 1 => break,
                    _ => {}
                }
            }
            let lane = self.m.lanes.get_mut(&key).unwrap();
            for id in &gone {
                if let Some(i) = lane.iter().position(|x| x == id) {
                    lane.remove(i);
                }
            }
            if lane.is_empty() {
                self.m.lanes.remove(&key);
            } else if !gone.is_empty() {
                self.moved = true;
            }
        }
    }

    fn reserved_first(&mut self, pri: usize, pool: &str) {
        let Some((rid, rpri)) = self.m.reservation(pool) else {
            return;
        };
        if rpri != pri || self.leased.len() >= self.want {
            return;
        }
        if self.decide(&rid, pri, pool, false) == Decision::Take {
            self.m.unqueue(&rid);
            self.take(&rid, pool);
        }
    }

    /// Returns how many jobs it parked.
    fn take_from_queue(&mut self, pri: usize, pool: &str) -> usize {
        let qk = (pri, pool.to_string());
        let mut back = Vec::new();
        let mut skipped = 0;
        let mut parked = 0;
        while self.leased.len() < self.want && !self.stopped.contains(pool) && !self.all_stopped {
            let n = (self.want - self.leased.len()).min(100);
            let q = self.m.queues.entry(qk.clone()).or_default();
            if q.is_empty() {
                break;
            }
            let ids: Vec<String> = q.drain(..n.min(q.len())).collect();
            for id in ids {
                if self.leased.len() >= self.want || self.stopped.contains(pool) || self.all_stopped {
                    back.push(id);
                    continue;
                }
                let j = self.m.jobs[&id].clone();
                let mut what = Decision::Stale;
                if j.state == State::Queued {
                    let key = Model::lane_key(&j);
                    what = if self.m.lane_parked(&key) {
                        Decision::Park
                    } else {
                        self.decide(&id, pri, pool, false)
                    };
                    if what == Decision::Park {
                        self.m.lanes.entry(key).or_default().push(id.clone());
                        parked += 1;
                    }
                }
                match what {
                    Decision::Take => self.take(&id, pool),
                    Decision::Skip => {
                        back.push(id);
                        skipped += 1;
                        if skipped >= DEPTH {
                            self.stopped.insert(pool.to_string());
                        }
                    }
                    Decision::Stop => {
                        back.push(id);
                        self.stopped.insert(pool.to_string());
                    }
                    Decision::End => {
                        back.push(id);
                        self.all_stopped = true;
                    }
                    Decision::Park | Decision::Stale => {}
                }
            }
        }
        let q = self.m.queues.entry(qk).or_default();
        let rest = std::mem::take(q);
        back.extend(rest);
        *q = back;
        parked
    }
}

impl Model {
    fn claim(&mut self, slot: usize, want: usize, room: &Room) -> Vec<String> {
        let pools: Vec<String> = if room.pools.is_empty() {
            std::iter::once("default".to_string())
                .chain(self.known_pools.iter().filter(|p| *p != "default").cloned())
                .collect()
        } else {
            room.pools.clone()
        };
        let ctx = Ctx {
            usage: self.usage.clone(),
        };
        let mut c = Claiming {
            m: self,
            ctx,
            want: want.min(1000),
            free: room.free_gpus.map(i64::from),
            leased: Vec::new(),
            stopped: BTreeSet::new(),
            all_stopped: false,
            borrowers: false,
            moved: false,
        };
        'all: for pri in 0..3 {
            for pool in &pools {
                if c.leased.len() >= c.want || c.all_stopped {
                    break 'all;
                }
                (c.borrowers, c.moved) = (false, false);
                if !c.stopped.contains(pool) {
                    c.reserved_first(pri, pool);
                }
                if !c.stopped.contains(pool) {
                    c.take_from_lanes(pri, pool, true);
                }
                let mut parked = 0;
                if !c.stopped.contains(pool) {
                    parked = c.take_from_queue(pri, pool);
                }
                if !c.stopped.contains(pool) && (c.borrowers || c.moved || parked > 0) {
                    c.take_from_lanes(pri, pool, false);
                }
            }
        }
        let (leased, usage) = (c.leased, c.ctx.usage);
        self.usage = usage;
        for id in &leased {
            self.seq += 1;
            self.leases[slot].push((id.clone(), self.seq));
        }
        leased
    }

    fn end(&mut self, slot: usize, id: &str, ok: bool) {
        self.leases[slot].retain(|(j, _)| j != id);
        let j = self.jobs.get_mut(id).unwrap();
        j.state = State::Done;
        let j = j.clone();
        Self::add(&mut self.usage, &j, -1);
        let _ = ok;
    }

    fn release(&mut self, slot: usize, id: &str) {
        self.leases[slot].retain(|(j, _)| j != id);
        let j = self.jobs.get_mut(id).unwrap();
        let copy = j.clone();
        if j.cancel {
            j.state = State::Done;
        } else {
            j.state = State::Queued;
            j.attempt = j.attempt.saturating_sub(1);
        }
        Self::add(&mut self.usage, &copy, -1);
        if !copy.cancel {
            self.requeue(id, true);
        }
    }

    fn reap(&mut self, slot: usize) {
        let mut held = std::mem::take(&mut self.leases[slot]);
        held.sort_by_key(|l| std::cmp::Reverse(l.1));
        for (id, _) in held {
            let j = self.jobs.get_mut(&id).unwrap();
            let copy = j.clone();
            // Cancelled, or dead with its attempts spent (3), or queued again.
            j.state = if j.cancel || j.attempt >= 3 {
                State::Done
            } else {
                State::Queued
            };
            Self::add(&mut self.usage, &copy, -1);
            if self.jobs[&id].state == State::Queued {
                self.requeue(&id, true);
            }
        }
    }

    /// Removes a queued job from its queue, else from its lane (`unqueue` in the scripts).
    fn unqueue(&mut self, id: &str) {
        let j = &self.jobs[id];
        let q = (j.pri, j.pool.clone());
        if let Some(i) = self.queues.get(&q).and_then(|l| l.iter().position(|x| x == id)) {
            self.queues.get_mut(&q).unwrap().remove(i);
            return;
        }
        let key = Self::lane_key(j);
        let lane = self.lanes.get_mut(&key).unwrap();
        let i = lane.iter().position(|x| x == id).unwrap();
        lane.remove(i);
        if lane.is_empty() {
            self.lanes.remove(&key);
        }
    }

    fn cancel(&mut self, id: &str) {
        let j = self.jobs.get_mut(id).unwrap();
        match j.state {
            State::Queued => {
                j.state = State::Done;
                self.unqueue(id);
            }
            State::Running => j.cancel = true,
            State::Done => {}
        }
    }
}

// ---------------------------------------------------------------- the run

fn spec_of(t: &JobTemplate, n: usize) -> JobSpec {
    let mut s = JobSpec::new(format!("m{n}"), TEAMS[t.team], vec!["true".into()]);
    s.id = Some(format!("m{n}").parse().unwrap());
    s.priority = Priority::ALL[t.priority];
    s.resources.gpus = t.gpus;
    s.resources.gpu_type = (t.pool == 1).then(|| "x".to_string());
    if t.group {
        s.group = Some("g".into());
        s.group_max_running = Some(1);
    }
    s
}

async fn check_agreement(
    env: &TestEnv,
    model: &mut Model,
    step: usize,
    op: &Op,
) -> Result<(), TestCaseError> {
    let usage: HashMap<String, i64> = {
        let mut conn = env.raw_redis().await;
        redis::cmd("HGETALL")
            .arg(format!("{{{}}}:usage", env.ns))
            .query_async(&mut conn)
            .await
            .unwrap()
    };
    let usage: BTreeMap<String, i64> = usage.into_iter().collect();
    prop_assert_eq!(&usage, &model.usage, "usage after step {} {:?}", step, op);
    let mut queued: Vec<String> = model
        .jobs
        .values()
        .filter(|j| j.state == State::Queued)
        .map(|j| j.id.clone())
        .collect();
    queued.sort();
    for id in queued {
        let want = model.waiting(&id);
        let got = env.queue.why_waiting(&id.parse().unwrap()).await.unwrap();
        if got.as_ref() != Some(&want) {
            dump_lists(env, model).await;
        }
        prop_assert_eq!(
            got.as_ref(),
            Some(&want),
            "job {} after step {} {:?}",
            id,
            step,
            op
        );
    }
    Ok(())
}

/// Prints the namespace's lists and sets and the model's queues and lanes, for a
/// disagreement (CI shows the shrunk case's output only in part).
async fn dump_lists(env: &TestEnv, model: &Model) {
    let mut conn = env.raw_redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}}}:*", env.ns))
        .query_async(&mut conn)
        .await
        .unwrap();
    for k in keys {
        let kind: String = redis::cmd("TYPE").arg(&k).query_async(&mut conn).await.unwrap();
        let mut cmd = match kind.as_str() {
            "list" => redis::cmd("LRANGE"),
            "set" => redis::cmd("SMEMBERS"),
            _ => continue,
        };
        cmd.arg(&k);
        if kind == "list" {
            cmd.arg(0).arg(-1);
        }
        let items: Vec<String> = cmd.query_async(&mut conn).await.unwrap();
        eprintln!("redis {k} {items:?}");
    }
    eprintln!("model queues {:?} lanes {:?}", model.queues, model.lanes);
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let env = TestEnv::new().await;
    let mut model = Model {
        leases: vec![Vec::new(); 3],
        ..Model::default()
    };
    let mut workers: Vec<WorkerId> = Vec::new();
    for _ in 0..3 {
        let w = WorkerId::generate("model");
        env.queue
            .heartbeat(&WorkerInfo::starting(&w, "t", "t", 1), Duration::from_secs(60))
            .await
            .unwrap();
        workers.push(w);
    }
    let mut made = 0;
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Enqueue(templates) => {
                let specs: Vec<JobSpec> = templates
                    .iter()
                    .enumerate()
                    .map(|(i, t)| spec_of(t, made + i))
                    .collect();
                let refused = specs.iter().any(|s| model.config.check_admissible(s).is_err());
                let got = env.queue.enqueue_batch(specs.clone()).await;
                prop_assert_eq!(got.is_err(), refused, "enqueue at step {}: {:?}", step, got);
                if !refused {
                    model.enqueues += 1;
                    for (t, s) in templates.iter().zip(&specs) {
                        let id = s.id.clone().unwrap().to_string();
                        model.jobs.insert(
                            id.clone(),
                            MJob {
                                id: id.clone(),
                                pri: t.priority,
                                pool: POOLS[t.pool].to_string(),
                                team: TEAMS[t.team].to_string(),
                                gpus: t.gpus,
                                group: if t.group { "g".into() } else { String::new() },
                                state: State::Queued,
                                attempt: 0,
                                cancel: false,
                                blocked: false,
                                born: model.enqueues,
                            },
                        );
                        if t.group {
                            model.groups.insert("g".into(), 1);
                        }
                        model.requeue(&id, false);
                    }
                    made += templates.len();
                }
            }
            Op::Claim {
                worker,
                max,
                free,
                pool,
            } => {
                let room = Room {
                    pools: pool.map(|p| vec![POOLS[p].to_string()]).unwrap_or_default(),
                    free_gpus: *free,
                };
                let got: Vec<String> = env
                    .queue
                    .claim_within(&workers[*worker], *max, "t", &room)
                    .await
                    .unwrap()
                    .jobs
                    .into_iter()
                    .map(|j| j.id.to_string())
                    .collect();
                let want = model.claim(*worker, *max, &room);
                if got != want {
                    dump_lists(&env, &model).await;
                }
                prop_assert_eq!(&got, &want, "claim at step {} {:?}", step, op);
            }
            Op::Finish { worker, pick, ok } => {
                let held = &model.leases[*worker];
                if held.is_empty() {
                    continue;
                }
                let id = held[pick % held.len()].0.clone();
                let outcome = if *ok {
                    Outcome::Succeeded
                } else {
                    Outcome::Fatal {
                        reason: "model".into(),
                    }
                };
                let r = env
                    .queue
                    .finish_many(
                        &workers[*worker],
                        &[EndedAttempt {
                            id: id.parse().unwrap(),
                            attempt: None,
                            claim_token: None,
                            outcome,
                        }],
                    )
                    .await
                    .unwrap();
                prop_assert!(r[0].is_ok(), "{:?}", r);
                model.end(*worker, &id, *ok);
            }
            Op::Release { worker, pick } => {
                let held = &model.leases[*worker];
                if held.is_empty() {
                    continue;
                }
                let id = held[pick % held.len()].0.clone();
                let lease = Lease {
                    id: id.parse().unwrap(),
                    attempt: None,
                    token: String::new(),
                };
                env.queue
                    .release_many(&workers[*worker], &[lease], "model")
                    .await
                    .unwrap();
                model.release(*worker, &id);
            }
            Op::Reap { worker } => {
                // The worker dies: its heartbeat goes, the reaper takes its leases, and a
                // new worker takes its place.
                let mut conn = env.raw_redis().await;
                let _: () = redis::cmd("DEL")
                    .arg(format!("{{{}}}:worker:{}", env.ns, workers[*worker]))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                env.queue.reap().await.unwrap();
                model.reap(*worker);
                let w = WorkerId::generate("model");
                env.queue
                    .heartbeat(&WorkerInfo::starting(&w, "t", "t", 1), Duration::from_secs(60))
                    .await
                    .unwrap();
                workers[*worker] = w;
            }
            Op::Cancel { pick } => {
                if made == 0 {
                    continue;
                }
                let id = format!("m{}", pick % made);
                if !model.jobs.contains_key(&id) {
                    continue;
                }
                let _ = env
                    .queue
                    .cancel(&JobId::try_from(id.clone()).unwrap(), "model")
                    .await;
                model.cancel(&id);
            }
            Op::Configure(c) => {
                env.queue.set_admission(c).await.unwrap();
                model.config = c.clone();
            }
        }
        check_agreement(&env, &mut model, step, op).await?;
    }
    env.queue.purge().await.unwrap();
    Ok(())
}

proptest! {
    // PROPTEST_CASES raises the case count for a deeper run than CI's.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_scripts_agree_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_case(ops))?;
    }
}
