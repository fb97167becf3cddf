//! Machine-readable views of the scan: JSON (`ls --json`, `inspect --json`, with serde_json,
//! the de-facto standard and already in the dependency tree) and the Prometheus text
//! exposition format (`metrics`, written by hand: it is a few lines of a simple format).
//!
//! Everything is read with `pread` (see `scan.rs`); nothing is mapped.

use mproc_segment::{Kind, peek};
use serde::Serialize;

use crate::scan::{Entry, Status, mapped_by};

/// One segment, as `ls --json` and `inspect --json` print it.
#[derive(Debug, Serialize)]
pub struct SegmentInfo {
    pub name: String,
    /// `mproc`, `damaged`, `foreign`, `not_regular` or `unreadable`.
    pub status: &'static str,
    pub kind: Option<String>,
    pub element_type: Option<String>,
    pub capacity: Option<u64>,
    pub bytes: Option<u64>,
    pub creator_pid: Option<u32>,
    pub creator_alive: bool,
    /// Whether any process holds it open (asked of the kernel: any pid namespace).
    pub in_use: bool,
    pub owner_uid: Option<u32>,
    pub error: Option<String>,
    /// For queues: the ring's counters.
    pub queue: Option<mproc_queue::RingSnapshot>,
    /// For locks and what holds one (arrays, values, conditions): the holder's peer token.
    pub lock_holder: Option<u32>,
    /// For locks and what holds one: the lock's counters.
    pub lock: Option<LockInfo>,
    /// For a pool's status board: its workers and counters.
    pub pool: Option<PoolInfo>,
    /// Live processes that map it, as far as this process can see them (`inspect` only).
    pub mapped_by: Option<Vec<u32>>,
}

/// A pool's status board.
#[derive(Debug, Serialize)]
pub struct PoolInfo {
    pub tasks_done: u64,
    pub retried: u64,
    /// Restarts by cause (died, timed_out, cancelled, memory, max_tasks).
    pub restarts: std::collections::BTreeMap<&'static str, u64>,
    /// Jobs failed by kind (worker_died, timed_out, cancelled, other).
    pub failures: std::collections::BTreeMap<&'static str, u64>,
    pub workers: Vec<PoolWorkerInfo>,
}

/// One worker of a pool.
#[derive(Debug, Serialize)]
pub struct PoolWorkerInfo {
    pub pid: u32,
    /// `starting`, `idle` or `running`.
    pub state: &'static str,
    /// The job it runs, if running.
    pub job: Option<u64>,
    pub tasks_done: u64,
}

/// The largest board `info` reads (a planted header claiming more is not followed).
const MAX_BOARD_BYTES: u64 = 1 << 20;

fn pool_info(b: mproc_pool::BoardSnapshot) -> PoolInfo {
    use mproc_pool::BoardWorkerState as S;
    PoolInfo {
        tasks_done: b.tasks_done,
        retried: b.retried,
        restarts: mproc_pool::RESTART_CAUSES
            .iter()
            .copied()
            .zip(b.restarts)
            .collect(),
        failures: mproc_pool::FAILURE_KINDS
            .iter()
            .copied()
            .zip(b.failures)
            .collect(),
        workers: b
            .workers
            .iter()
            .map(|w| PoolWorkerInfo {
                pid: w.pid,
                state: match w.state {
                    S::Starting => "starting",
                    S::Idle => "idle",
                    S::Running(_) => "running",
                },
                job: match w.state {
                    S::Running(j) => Some(j),
                    _ => None,
                },
                tasks_done: w.tasks_done,
            })
            .collect(),
    }
}

/// A lock's counters since it was made.
#[derive(Debug, Serialize)]
pub struct LockInfo {
    pub acquisitions: u64,
    pub contentions: u32,
    pub owner_deaths: u32,
}

fn has_lock(kind: Kind) -> bool {
    [
        Kind::LOCK,
        Kind::RLOCK,
        Kind::CONDITION,
        Kind::ARRAY,
        Kind::VALUE,
    ]
    .contains(&kind)
}

/// What is known of `e`; with `detail`, also who maps it.
pub fn info(e: &Entry, detail: bool) -> SegmentInfo {
    let mut out = SegmentInfo {
        name: e.name.clone(),
        status: match &e.status {
            Status::Mproc(_) => "mproc",
            Status::Damaged(_) => "damaged",
            Status::Foreign => "foreign",
            Status::NotRegular => "not_regular",
            Status::Unreadable(_) => "unreadable",
        },
        kind: None,
        element_type: None,
        capacity: None,
        bytes: None,
        creator_pid: None,
        creator_alive: e.creator_alive,
        in_use: e.in_use,
        owner_uid: e.owner,
        error: match &e.status {
            Status::Damaged(err) => Some(err.to_string()),
            Status::Unreadable(why) => Some(why.clone()),
            _ => None,
        },
        queue: None,
        lock_holder: None,
        lock: None,
        pool: None,
        mapped_by: None,
    };
    let Status::Mproc(h) = &e.status else {
        return out;
    };
    out.kind = Some(h.kind.to_string());
    out.element_type = Some(h.element.name.to_string());
    out.capacity = Some(h.capacity);
    out.bytes = Some(h.total_len);
    out.creator_pid = Some(h.creator.pid);
    if let Ok(p) = peek(&e.name) {
        if h.kind == Kind::QUEUE {
            let mut ring = vec![0u8; std::mem::size_of::<mproc_queue::RingHeader>()];
            if let Ok(n) = p.read_payload(0, &mut ring) {
                if let Some(r) = mproc_queue::RingSnapshot::from_bytes(&ring[..n]) {
                    out.queue = Some(r);
                }
            }
        }
        if h.kind == Kind::POOL && h.payload_len <= MAX_BOARD_BYTES {
            let mut raw = vec![0u8; h.payload_len as usize];
            if let Ok(n) = p.read_payload(0, &mut raw) {
                out.pool = mproc_pool::BoardSnapshot::from_bytes(&raw[..n]).map(pool_info);
            }
        }
        if has_lock(h.kind) {
            let mut raw = [0u8; std::mem::size_of::<mproc_sync::RawLock>()];
            if let Some(c) = p
                .read_payload(0, &mut raw)
                .ok()
                .and_then(|n| mproc_sync::LockCounters::from_bytes(&raw[..n]))
            {
                out.lock_holder = c.holder;
                out.lock = Some(LockInfo {
                    acquisitions: c.acquisitions,
                    contentions: c.contentions,
                    owner_deaths: c.owner_deaths,
                });
            }
        }
        if detail {
            out.mapped_by = Some(mapped_by(p.dev_ino));
        }
    }
    out
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    // The format's own escapes; every other control character becomes U+FFFD (the format
    // has no escape for them, and an ESC in a planted name must not reach a terminal that
    // shows the exposition).
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Gauges go up and down; counters only go up (since the segment was made).
#[derive(Clone, Copy, PartialEq)]
enum Type {
    Gauge,
    Counter,
}

/// The Prometheus text exposition format of the segments' gauges and counters.
pub fn metrics(infos: &[SegmentInfo]) -> String {
    use Type::{Counter, Gauge};
    let families: [(&str, &str, Type); 26] = [
        (
            "mproc_segment_bytes",
            "Total length of an mproc segment, in bytes.",
            Gauge,
        ),
        (
            "mproc_segment_creator_alive",
            "1 if the segment's creator still runs.",
            Gauge,
        ),
        (
            "mproc_queue_length",
            "Messages in a queue (published, not yet taken).",
            Gauge,
        ),
        ("mproc_queue_capacity", "Slots of a queue.", Gauge),
        (
            "mproc_queue_arena_bytes",
            "Bytes of a queue's body arena.",
            Gauge,
        ),
        ("mproc_queue_closed", "1 if the queue was closed.", Gauge),
        ("mproc_queue_handles", "Handles open on a queue.", Gauge),
        (
            "mproc_queue_unfinished",
            "JoinableQueue items not yet reported done.",
            Gauge,
        ),
        (
            "mproc_queue_blocked_producers",
            "Producers asleep waiting for room.",
            Gauge,
        ),
        (
            "mproc_queue_blocked_consumers",
            "Consumers asleep waiting for an item.",
            Gauge,
        ),
        (
            "mproc_queue_high_water",
            "Most items seen in a queue at once (the capacity once it ran full).",
            Gauge,
        ),
        (
            "mproc_queue_full_waits_total",
            "Puts refused because every slot was taken (try_put, or a timeout ran out).",
            Counter,
        ),
        (
            "mproc_queue_space_waits_total",
            "Puts whose body found the queue's arena full.",
            Counter,
        ),
        (
            "mproc_queue_put_total",
            "Items put into a queue since it was made.",
            Counter,
        ),
        (
            "mproc_queue_got_total",
            "Items taken from a queue since it was made.",
            Counter,
        ),
        (
            "mproc_queue_dead_skipped_total",
            "Slots skipped because their producer died mid-put.",
            Counter,
        ),
        (
            "mproc_queue_dead_reclaimed_total",
            "Slots reclaimed because their reader died mid-get.",
            Counter,
        ),
        ("mproc_lock_held", "1 if the lock is held.", Gauge),
        ("mproc_pool_workers", "Worker slots of a named pool.", Gauge),
        (
            "mproc_pool_workers_busy",
            "Workers of a named pool running a job now.",
            Gauge,
        ),
        (
            "mproc_pool_tasks_done_total",
            "Tasks (chunks) a named pool's workers completed.",
            Counter,
        ),
        (
            "mproc_pool_failures_total",
            "Jobs of a named pool that failed, by kind.",
            Counter,
        ),
        (
            "mproc_pool_restarts_total",
            "Workers of a named pool replaced, by cause.",
            Counter,
        ),
        (
            "mproc_lock_acquisitions_total",
            "Acquisitions of a lock since it was made.",
            Counter,
        ),
        (
            "mproc_lock_contentions_total",
            "Lockers that found a lock held and waited.",
            Counter,
        ),
        (
            "mproc_lock_owner_deaths_total",
            "Take-overs of a lock from a holder that died.",
            Counter,
        ),
    ];
    let mut samples: Vec<Vec<String>> = vec![Vec::new(); families.len()];
    let mut push = |family: &str, labels: &str, value: u64| {
        if let Some(i) = families.iter().position(|f| f.0 == family) {
            samples[i].push(format!("{family}{{{labels}}} {value}"));
        }
    };
    for i in infos.iter().filter(|i| i.status == "mproc") {
        let name = label(&i.name);
        let kind = label(i.kind.as_deref().unwrap_or(""));
        let l = format!("name=\"{name}\"");
        push(
            "mproc_segment_bytes",
            &format!("name=\"{name}\",kind=\"{kind}\""),
            i.bytes.unwrap_or(0),
        );
        push(
            "mproc_segment_creator_alive",
            &l,
            u64::from(i.creator_alive),
        );
        if let Some(q) = &i.queue {
            push("mproc_queue_length", &l, q.len);
            push("mproc_queue_capacity", &l, q.capacity);
            push("mproc_queue_arena_bytes", &l, q.arena_bytes);
            push("mproc_queue_closed", &l, u64::from(q.closed));
            push("mproc_queue_handles", &l, u64::from(q.attached));
            push("mproc_queue_unfinished", &l, q.unfinished);
            push(
                "mproc_queue_blocked_producers",
                &l,
                u64::from(q.blocked_producers),
            );
            push(
                "mproc_queue_blocked_consumers",
                &l,
                u64::from(q.blocked_consumers),
            );
            push("mproc_queue_high_water", &l, q.high_water);
            push("mproc_queue_full_waits_total", &l, q.full_waits);
            push("mproc_queue_space_waits_total", &l, q.space_waits);
            push("mproc_queue_put_total", &l, q.put_total);
            push("mproc_queue_got_total", &l, q.got_total);
            push("mproc_queue_dead_skipped_total", &l, q.dead_skipped);
            push("mproc_queue_dead_reclaimed_total", &l, q.dead_reclaimed);
        }
        if let Some(pl) = &i.pool {
            push("mproc_pool_workers", &l, pl.workers.len() as u64);
            let busy = pl.workers.iter().filter(|w| w.state == "running").count();
            push("mproc_pool_workers_busy", &l, busy as u64);
            push("mproc_pool_tasks_done_total", &l, pl.tasks_done);
            for (kind, n) in &pl.failures {
                push(
                    "mproc_pool_failures_total",
                    &format!("{l},kind=\"{kind}\""),
                    *n,
                );
            }
            for (cause, n) in &pl.restarts {
                push(
                    "mproc_pool_restarts_total",
                    &format!("{l},cause=\"{cause}\""),
                    *n,
                );
            }
        }
        if let Some(c) = &i.lock {
            if i.kind
                .as_deref()
                .is_some_and(|k| k == "lock" || k == "rlock")
            {
                push("mproc_lock_held", &l, u64::from(i.lock_holder.is_some()));
            }
            push("mproc_lock_acquisitions_total", &l, c.acquisitions);
            push("mproc_lock_contentions_total", &l, u64::from(c.contentions));
            push(
                "mproc_lock_owner_deaths_total",
                &l,
                u64::from(c.owner_deaths),
            );
        }
    }
    let mut out = String::new();
    for ((name, help, ty), samples) in families.iter().zip(samples) {
        if samples.is_empty() {
            continue;
        }
        let ty = if *ty == Counter { "counter" } else { "gauge" };
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {ty}\n"));
        for s in samples {
            out.push_str(&s);
            out.push('\n');
        }
    }
    out
}

/// The counters `top` turns into rates, by segment name.
#[derive(Clone, Copy, Default)]
struct Sample {
    put: u64,
    got: u64,
    acquisitions: u64,
    /// For a pool worker's row: the pid whose `got` (tasks done) this is.
    pid: u32,
}

fn sample_of(i: &SegmentInfo) -> Sample {
    Sample {
        put: i.queue.as_ref().map_or(0, |q| q.put_total),
        // A pool's "gets" are the tasks its workers completed.
        got: i.queue.as_ref().map_or_else(
            || i.pool.as_ref().map_or(0, |p| p.tasks_done),
            |q| q.got_total,
        ),
        acquisitions: i.lock.as_ref().map_or(0, |l| l.acquisitions),
        pid: 0,
    }
}

/// Per second, from two readings of a counter `secs` apart (0 if it went back: a segment that
/// was replaced under the same name).
/// Text as a terminal may show it: control characters (ESC, BEL, CR, newlines: what could
/// move the cursor, rewrite a row or fake one) are written as escapes (`\u{1b}`). Names and
/// type names come from files any user can plant; JSON and metrics escape on their own.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    now.checked_sub(before).map_or(0.0, |d| d as f64 / secs)
}

/// The column `top` sorts by (`s` cycles through them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    Name,
    Put,
    Get,
    Length,
    Acquire,
}

impl SortBy {
    const ALL: [SortBy; 5] = [
        SortBy::Name,
        SortBy::Put,
        SortBy::Get,
        SortBy::Length,
        SortBy::Acquire,
    ];

    pub fn next(self) -> SortBy {
        let i = Self::ALL.iter().position(|&s| s == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    pub fn label(self) -> &'static str {
        match self {
            SortBy::Name => "name",
            SortBy::Put => "put/s",
            SortBy::Get => "get/s",
            SortBy::Length => "length",
            SortBy::Acquire => "acquire/s",
        }
    }
}

/// One sample of every queue and lock under `prefix`.
fn read_top(prefix: &str) -> Result<Vec<SegmentInfo>, String> {
    let entries = crate::scan::scan(prefix).map_err(|e| format!("cannot read /dev/shm: {e}"))?;
    Ok(entries
        .iter()
        .map(|e| info(e, false))
        .filter(|i| i.queue.is_some() || i.lock.is_some() || i.pool.is_some())
        .collect())
}

/// Rates between two samples, kept for the next one.
struct Rates {
    before: std::collections::HashMap<String, Sample>,
    at: std::time::Instant,
}

impl Rates {
    fn new(infos: &[SegmentInfo]) -> Rates {
        Rates {
            before: infos
                .iter()
                .map(|i| (i.name.clone(), sample_of(i)))
                .collect(),
            at: std::time::Instant::now(),
        }
    }

    /// The table's lines (a header, then a row a segment, sorted), and the samples kept.
    fn table(&mut self, infos: &[SegmentInfo], sort: SortBy) -> Vec<String> {
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        // A row a segment, followed by its sub-rows (a pool's workers), sorted as one.
        let mut rows: Vec<(String, [f64; 4], Vec<String>)> = Vec::new();
        let mut worker_samples: Vec<(String, Sample)> = Vec::new();
        for i in infos {
            let now = sample_of(i);
            // New since the last sample: its rate is measured from the next one.
            let was = self.before.get(&i.name).copied().unwrap_or(now);
            let kind = i.kind.as_deref().unwrap_or("");
            let (put, got, acq) = (
                rate(now.put, was.put, secs),
                rate(now.got, was.got, secs),
                rate(now.acquisitions, was.acquisitions, secs),
            );
            let dash = || "-".to_owned();
            let (len, asleep, dead, put_s, got_s, length) = match &i.queue {
                Some(q) => (
                    format!("{}/{}", q.len, q.capacity),
                    format!("{}p/{}c", q.blocked_producers, q.blocked_consumers),
                    q.dead_skipped.saturating_add(q.dead_reclaimed),
                    format!("{put:.0}"),
                    format!("{got:.0}"),
                    q.len as f64,
                ),
                None => match &i.pool {
                    // A pool: busy workers of all, tasks done per second, workers that died.
                    Some(p) => {
                        let busy = p.workers.iter().filter(|w| w.state == "running").count();
                        (
                            format!("{busy}/{}", p.workers.len()),
                            dash(),
                            p.restarts.get("died").copied().unwrap_or(0),
                            dash(),
                            format!("{got:.0}"),
                            busy as f64,
                        )
                    }
                    None => (dash(), dash(), 0, dash(), dash(), 0.0),
                },
            };
            let (acq_s, waits, deaths) = match &i.lock {
                Some(l) => (
                    format!("{acq:.0}"),
                    l.contentions.to_string(),
                    u64::from(l.owner_deaths),
                ),
                None => (dash(), dash(), 0),
            };
            let line = format!(
                "{:<40} {:<10} {:>13} {:>11} {:>11} {:>9} {:>11} {:>8} {:>6}",
                shown(&i.name),
                shown(kind),
                len,
                put_s,
                got_s,
                asleep,
                acq_s,
                waits,
                dead.saturating_add(deaths)
            );
            let mut lines = vec![line];
            // A pool's workers, one row each: slot, pid, state, job, tasks done per second.
            for (k, w) in i.pool.iter().flat_map(|p| p.workers.iter()).enumerate() {
                let key = format!("{}\0worker{k}", i.name);
                let now = Sample {
                    got: w.tasks_done,
                    pid: w.pid,
                    ..Sample::default()
                };
                // A replaced worker starts its count again: rate from its own first reading.
                let was = self
                    .before
                    .get(&key)
                    .copied()
                    .filter(|s| s.pid == w.pid)
                    .unwrap_or(now);
                worker_samples.push((key, now));
                lines.push(format!(
                    "{:<40} {:<10} {:>13} {:>11} {:>11}",
                    format!("  worker {k} (pid {})", w.pid),
                    w.state,
                    w.job.map_or_else(dash, |j| format!("job {j}")),
                    dash(),
                    format!("{:.0}", rate(now.got, was.got, secs)),
                ));
            }
            rows.push((i.name.clone(), [put, got, length, acq], lines));
        }
        let key = |r: &(String, [f64; 4], Vec<String>)| match sort {
            SortBy::Name => 0.0,
            SortBy::Put => r.1[0],
            SortBy::Get => r.1[1],
            SortBy::Length => r.1[2],
            SortBy::Acquire => r.1[3],
        };
        // Largest first, then by name.
        rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.0.cmp(&b.0)));
        *self = Rates::new(infos);
        self.before.extend(worker_samples);
        let mut lines = vec![format!(
            "{:<40} {:<10} {:>13} {:>11} {:>11} {:>9} {:>11} {:>8} {:>6}",
            "NAME", "KIND", "LEN/CAP", "PUT/S", "GET/S", "ASLEEP", "ACQUIRE/S", "WAITS", "DEAD"
        )];
        lines.extend(rows.into_iter().flat_map(|r| r.2));
        lines
    }
}

/// `mproc top` for scripts and pipes: `count` reports (or until interrupted), one every
/// `interval`, each a table followed by a blank line.
pub fn top_print(
    prefix: &str,
    interval: std::time::Duration,
    count: Option<u64>,
    sort: SortBy,
) -> Result<(), String> {
    use std::io::Write;
    let mut rates = Rates::new(&read_top(prefix)?);
    let mut out = std::io::stdout().lock();
    for _ in 0..count.unwrap_or(u64::MAX) {
        std::thread::sleep(interval);
        let infos = read_top(prefix)?;
        let mut text = rates.table(&infos, sort).join("\n");
        text.push_str("\n\n");
        // A closed pipe (`mproc top | head`) ends the command quietly.
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Restores the terminal however `top_interactive` ends (error or panic included).
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        use crossterm::{cursor, execute, terminal};
        terminal::enable_raw_mode()?;
        let screen = Screen;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        use crossterm::{cursor, execute, terminal};
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

/// `mproc top` on a terminal: redraws every `interval` in the alternate screen; `s` changes
/// the sort column, `q` (or Esc, or Ctrl-C) quits. Plain escape sequences only (crossterm:
/// no curses, no terminfo), so it reads the same over SSH.
pub fn top_interactive(
    prefix: &str,
    interval: std::time::Duration,
    mut sort: SortBy,
) -> Result<(), String> {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    use crossterm::{cursor, queue, style::Print, terminal};
    use std::io::Write;
    use std::time::Instant;

    let io = |e: std::io::Error| format!("terminal: {e}");
    let _screen = Screen::enter().map_err(io)?;
    let mut rates = Rates::new(&read_top(prefix)?);
    let mut lines: Vec<String> = Vec::new();
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            lines = rates.table(&read_top(prefix)?, sort);
            next = Instant::now() + interval;
        }
        let (width, height) = terminal::size().unwrap_or((120, 40));
        let mut out = std::io::stdout().lock();
        queue!(
            out,
            terminal::Clear(terminal::ClearType::All),
            cursor::MoveTo(0, 0),
            Print(format!(
                "mproc top: {} segment(s), sorted by {} (s: sort, q: quit)",
                // Sub-rows (a pool's workers) are indented.
                lines.iter().skip(1).filter(|l| !l.starts_with(' ')).count(),
                sort.label()
            ))
        )
        .map_err(io)?;
        for (row, line) in lines
            .iter()
            .take(usize::from(height).saturating_sub(2))
            .enumerate()
        {
            let shown: String = line.chars().take(usize::from(width)).collect();
            queue!(out, cursor::MoveTo(0, row as u16 + 2), Print(shown)).map_err(io)?;
        }
        out.flush().map_err(io)?;
        drop(out);
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait).map_err(io)? {
            if let Event::Key(k) = event::read().map_err(io)? {
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(());
                    }
                    KeyCode::Char('s') => sort = sort.next(),
                    _ => {}
                }
            }
        }
    }
}
