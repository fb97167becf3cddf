//! `mproc top`: rates of every queue, lock and pool under a prefix, as text reports (pipes,
//! scripts, `--count`) or a live terminal view (crossterm: alternate screen, `s` cycles the
//! sort, `q`/Esc/Ctrl-C quits).

use crate::report::{SegmentInfo, info, shown};

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
