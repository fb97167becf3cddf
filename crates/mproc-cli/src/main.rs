//! `mproc`: list, inspect and garbage-collect mproc shared-memory segments.
//!
//! ```text
//! mproc ls [--prefix P] [--all] [--json]   segments in /dev/shm: kind, type, capacity, size,
//!                                           creator
//! mproc inspect [--json] NAME          the header, and for a queue its length and state
//! mproc metrics [--prefix P]           the same numbers in Prometheus's text format
//! mproc top [--prefix P] [--interval-ms MS] [--count N] [--sort COL]
//!                                     queue and lock rates (puts/s, gets/s, acquisitions/s),
//!                                     sleepers and dead-peer recoveries, every interval; on a
//!                                     terminal a live view (s: sort, q: quit)
//! mproc ls|metrics|top --redis URL  the same views of the queues on a Redis server
//! mproc bridge FROM TO [--count N]
//!                                     forward a queue's messages to another queue: shm:NAME
//!                                     to redis://HOST/?queue=NAME or back
//! mproc gc [--prefix P] [--yes]
//!                                     unlink segments whose creator is dead and that no live
//!                                     process maps (dry run unless --yes)
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mproc_segment::{Kind, SegmentError};
use report::shown;

mod bridge;
mod metrics;
mod redis_view;
mod report;
mod scan;
mod top;

use scan::{Entry, Status, scan};

/// Lists, inspects and garbage-collects mproc shared-memory segments in /dev/shm.
#[derive(Parser, Debug)]
#[command(name = "mproc", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List mproc segments with kind, element type, capacity, size and creator.
    Ls {
        /// Only names starting with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Also list /dev/shm entries that are not mproc segments.
        #[arg(long)]
        all: bool,
        /// Print a JSON array (every entry, with its status) instead of a table.
        #[arg(long)]
        json: bool,
        /// Show the queues on this Redis server (`redis://HOST[:PORT][/DB]`) instead of
        /// the shared-memory segments.
        #[arg(long)]
        redis: Option<String>,
    },
    /// Show a segment's header; for a queue, also its length and state.
    Inspect {
        /// The segment's name (as in /dev/shm, without a leading slash).
        name: String,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print gauges of every mproc segment in the Prometheus text exposition format.
    Metrics {
        /// Only names starting with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Show the queues on this Redis server (`redis://HOST[:PORT][/DB]`) instead of
        /// the shared-memory segments.
        #[arg(long)]
        redis: Option<String>,
    },
    /// Every interval, print each queue's and lock's rates (items put and taken per second,
    /// acquisitions per second), its sleepers, and recoveries from dead peers.
    Top {
        /// Only names starting with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Milliseconds between samples.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        interval_ms: u64,
        /// Print this many reports and stop (the default on a pipe is to print until
        /// interrupted; on a terminal, without --count, the view redraws in place).
        #[arg(long)]
        count: Option<u64>,
        /// The column to sort by, largest first: name, put, get, length, acquire.
        #[arg(long, default_value = "name")]
        sort: String,
        /// Show the queues on this Redis server (`redis://HOST[:PORT][/DB]`) instead of
        /// the shared-memory segments.
        #[arg(long)]
        redis: Option<String>,
    },
    /// Forward every message of one queue to another: a shared-memory queue (`shm:NAME`) to
    /// a queue on a Redis server (`redis://HOST[:PORT][/DB]?queue=NAME[&capacity=N]`), or
    /// back. Runs until the source is closed and drained (then closes the destination).
    Bridge {
        /// Where messages come from.
        from: String,
        /// Where they go.
        to: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Unlink segments whose creator is dead and that no live process maps.
    Gc {
        /// Only names starting with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Unlink them (without it, only print what would be unlinked).
        #[arg(long)]
        yes: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ls {
            prefix,
            json,
            redis: Some(url),
            ..
        } => redis_view::ls(&url, &prefix, json),
        Command::Ls {
            prefix, json: true, ..
        } => ls_json(&prefix),
        Command::Ls { prefix, all, .. } => ls(&prefix, all),
        Command::Inspect { name, json: true } => inspect_json(&name),
        Command::Inspect { name, .. } => inspect(&name),
        Command::Metrics {
            prefix,
            redis: Some(url),
        } => redis_view::metrics(&url, &prefix),
        Command::Metrics { prefix, .. } => metrics(&prefix),
        Command::Top {
            prefix,
            interval_ms,
            count,
            redis: Some(url),
            ..
        } => redis_view::top(
            &url,
            &prefix,
            std::time::Duration::from_millis(interval_ms),
            count,
        ),
        Command::Top {
            prefix,
            interval_ms,
            count,
            sort,
            ..
        } => top(&prefix, interval_ms, count, &sort),
        Command::Gc { prefix, yes } => gc(&prefix, yes),
        Command::Bridge { from, to, count } => bridge::bridge(&from, &to, count),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mproc: {message}");
            ExitCode::FAILURE
        }
    }
}

fn ls(prefix: &str, all: bool) -> Result<(), String> {
    let entries = scan(prefix).map_err(|e| format!("cannot read /dev/shm: {e}"))?;
    println!(
        "{:<40} {:<10} {:<28} {:>10} {:>12} {:>8} {:<6}",
        "NAME", "KIND", "TYPE", "CAPACITY", "BYTES", "CREATOR", "ALIVE"
    );
    for e in entries {
        match &e.status {
            Status::Mproc(h) => println!(
                "{:<40} {:<10} {:<28} {:>10} {:>12} {:>8} {:<6}",
                shown(&e.name),
                shown(&h.kind.to_string()),
                truncate(&shown(&h.element.name), 28),
                h.capacity,
                h.total_len,
                h.creator.pid,
                if e.creator_alive { "yes" } else { "no" }
            ),
            Status::Damaged(err) => {
                println!(
                    "{:<40} damaged: {}",
                    shown(&e.name),
                    shown(&err.to_string())
                )
            }
            Status::Foreign if all => {
                println!("{:<40} (not an mproc segment)", shown(&e.name))
            }
            Status::NotRegular if all => println!("{:<40} (not a regular file)", shown(&e.name)),
            Status::Unreadable(why) if all => {
                println!("{:<40} (unreadable: {})", shown(&e.name), shown(why))
            }
            Status::Foreign | Status::NotRegular | Status::Unreadable(_) => {}
        }
    }
    Ok(())
}

fn ls_json(prefix: &str) -> Result<(), String> {
    let entries = scan(prefix).map_err(|e| format!("cannot read /dev/shm: {e}"))?;
    let infos: Vec<_> = entries.iter().map(|e| report::info(e, false)).collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&infos).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn inspect_json(name: &str) -> Result<(), String> {
    mproc_segment::validate_name(name).map_err(|e| e.to_string())?;
    let e = scan::classify(name.to_owned());
    if !matches!(e.status, Status::Mproc(_)) {
        let why = match &e.status {
            Status::Damaged(err) => err.to_string(),
            Status::Unreadable(why) => why.clone(),
            Status::NotRegular => "not a regular file".into(),
            _ => "not an mproc segment".into(),
        };
        return Err(format!("{name}: {why}"));
    }
    let info = report::info(&e, true);
    println!(
        "{}",
        serde_json::to_string_pretty(&info).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn metrics(prefix: &str) -> Result<(), String> {
    let entries = scan(prefix).map_err(|e| format!("cannot read /dev/shm: {e}"))?;
    let infos: Vec<_> = entries.iter().map(|e| report::info(e, false)).collect();
    print!("{}", metrics::metrics(&infos));
    Ok(())
}

fn top(prefix: &str, interval_ms: u64, count: Option<u64>, sort: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    use top::SortBy;
    let sort = match sort {
        "name" => SortBy::Name,
        "put" => SortBy::Put,
        "get" => SortBy::Get,
        "length" => SortBy::Length,
        "acquire" => SortBy::Acquire,
        other => {
            return Err(format!(
                "unknown sort column {other:?} (name, put, get, length, acquire)"
            ));
        }
    };
    let interval = std::time::Duration::from_millis(interval_ms);
    if count.is_none() && std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        top::top_interactive(prefix, interval, sort)
    } else {
        top::top_print(prefix, interval, count, sort)
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn inspect(name: &str) -> Result<(), String> {
    mproc_segment::validate_name(name).map_err(|e| e.to_string())?;
    let p = mproc_segment::peek(name).map_err(|e| match e {
        mproc_segment::PeekError::NotRegular => format!("{}: not a regular file", shown(name)),
        mproc_segment::PeekError::Io(e) => format!("{}: {e}", shown(name)),
        mproc_segment::PeekError::Segment(e) => {
            format!("{}: {}", shown(name), shown(&e.to_string()))
        }
    })?;
    let h = &p.header;
    println!("name:            {}", shown(name));
    println!("owner:           uid {}, mode {:#o}", p.owner, p.mode);
    println!("format version:  {}", h.version);
    println!("kind:            {}", shown(&h.kind.to_string()));
    println!("element type:    {}", shown(&h.element.to_string()));
    println!("capacity:        {}", h.capacity);
    println!(
        "payload:         {} bytes at offset {}",
        h.payload_len, h.payload_offset
    );
    println!("total length:    {} bytes", h.total_len);
    println!(
        "creator:         pid {} in its namespace ({})",
        h.creator.pid,
        match p.creator_alive {
            Some(true) => "alive",
            Some(false) => "dead",
            None => "unknown",
        }
    );
    println!(
        "in use:          {}",
        match p.in_use {
            Some(true) => "yes (held open by at least one process)",
            Some(false) => "no (no process holds it open)",
            None => "unknown",
        }
    );
    let mappers = scan::mapped_by(p.dev_ino);
    println!(
        "mapped by:       {} (as seen from here)",
        describe_pids(&mappers)
    );
    if h.kind == Kind::QUEUE {
        let mut ring = vec![0u8; std::mem::size_of::<mproc_queue::RingHeader>()];
        let n = p
            .read_payload(0, &mut ring)
            .map_err(|e| format!("{name}: queue header: {e}"))?;
        let r = mproc_queue::RingSnapshot::from_bytes(&ring[..n])
            .ok_or_else(|| format!("{name}: queue header truncated"))?;
        println!(
            "queue:           {} of {} slots used, {} bytes per slot, {} bytes of arena, {}, {} handle(s) attached, {} unfinished",
            r.len,
            r.capacity,
            r.slot_size,
            r.arena_bytes,
            if r.closed { "closed" } else { "open" },
            r.attached,
            r.unfinished
        );
    }
    Ok(())
}

fn describe_pids(pids: &[u32]) -> String {
    if pids.is_empty() {
        "no live process".to_owned()
    } else {
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a segment may be removed, or `None` if it must stay: only this user's segments that no
/// process holds open and whose creator is gone (both asked of the kernel, so live users in
/// other pid namespaces and non-dumpable ones count). `remove_stale` checks again under the
/// exclusive in-use lock before it unlinks.
fn collectable(e: &Entry) -> Option<String> {
    if !e.mine() || e.in_use {
        return None;
    }
    match &e.status {
        Status::Mproc(h) if !e.creator_alive => Some(format!(
            "creator pid {} is gone, no process holds it open",
            h.creator.pid
        )),
        Status::Damaged(SegmentError::NotReady { creator_dead: true }) => {
            Some("its creator died while creating it, no process holds it open".to_owned())
        }
        _ => None,
    }
}

fn gc(prefix: &str, yes: bool) -> Result<(), String> {
    let entries = scan(prefix).map_err(|e| format!("cannot read /dev/shm: {e}"))?;
    let mut n = 0;
    for e in &entries {
        let Some(why) = collectable(e) else {
            continue;
        };
        n += 1;
        if yes {
            if mproc_segment::remove_stale(&e.name) {
                println!("removed {} ({why})", shown(&e.name));
            } else {
                println!(
                    "could not remove {}: in use or replaced meanwhile",
                    shown(&e.name)
                );
            }
        } else {
            println!("would remove {} ({why})", shown(&e.name));
        }
    }
    if !yes && n > 0 {
        println!("{n} segment(s); run `mproc gc --yes` to remove them");
    }
    if n == 0 {
        println!("nothing to collect");
    }
    Ok(())
}
