//! A Rust process for the Python package's tests: it opens, by name, objects a Python process
//! made (or makes them for Python to open), as a user's Rust service would.
//!
//! ```text
//! peer put-bytes NAME N        puts b"rust-0" .. b"rust-{N-1}" on ByteQueue NAME
//! peer get-bytes NAME N        takes N messages from ByteQueue NAME, prints each on a line
//! peer loan-put NAME N SIZE     puts N messages of SIZE bytes on ByteQueue NAME, each written
//!                              in place through a loan: byte j of message k is (k + j) % 251
//! peer loan-check NAME N        takes N messages from ByteQueue NAME through read loans and
//!                              prints "LEN ok" for one whose bytes follow that pattern
//!                              (k counted from 0), "LEN bad" otherwise
//! peer array-add NAME X        adds X to every f64 of Array NAME, under its lock
//! peer value-add NAME K        adds 1 to the i64 Value NAME, K times, each under its lock
//! peer atomic-add NAME K      adds 1 to the i64 AtomicValue NAME, K times (fetch_add)
//! peer hold-lock NAME          takes Lock NAME, prints "held", then waits to be killed
//! peer make-array NAME N       creates Array<f64> NAME = [0, 1, .., N-1], prints "ready",
//!                              keeps it until stdin closes
//! peer dict-set NAME K V        sets str key K to bytes V in Python Dict NAME
//! peer cbor-put NAME N        puts N `Record`s (see below) on CborQueue NAME
//! peer cbor-echo IN OUT N      takes N `Record`s from CborQueue IN, puts each on OUT with
//!                              `id` + 1000 and `tags` reversed; a message that is not a
//!                              Record prints "unreadable: REASON" and does not count
//! peer dict-die NAME STEP       starts setting a key of Python Dict NAME and SIGKILLs itself
//!                              at the STEPth store of that write (`crash-points`)
//! ```

use std::io::{BufRead, Write};

use mproc_array::{Array, AtomicValue, Value};
use mproc_queue::{ByteQueue, CborQueue, DictOptions, GetError};
use mproc_sync::Lock;

/// What `cbor-put` sends and `cbor-echo` reads: a struct with a field of every CBOR kind
/// Python's `mproc.Queue(codec="cbor")` maps (test_rust.py builds the same as dicts).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    id: u64,
    delta: i64,
    name: String,
    tags: Vec<String>,
    score: f64,
    #[serde(with = "serde_bytes")]
    raw: Vec<u8>,
    extra: Option<std::collections::BTreeMap<String, i64>>,
    ok: bool,
}

fn record(i: u64) -> Record {
    Record {
        id: i,
        delta: -(i as i64) * 1_000_003,
        name: format!("récord-{i}"),
        tags: (0..i % 4).map(|t| format!("t{t}")).collect(),
        score: i as f64 / 4.0,
        raw: vec![i as u8; (i % 5) as usize],
        extra: (i % 3 == 0).then(|| [("k".to_string(), i as i64)].into()),
        ok: i % 2 == 0,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().ok_or("missing argument");
    let out = std::io::stdout();
    match arg(0)?.as_str() {
        "put-bytes" => {
            let q = ByteQueue::open(&arg(1)?)?;
            for i in 0..arg(2)?.parse::<usize>()? {
                q.put(format!("rust-{i}").into_bytes())
                    .map_err(|e| e.to_string())?;
            }
        }
        "get-bytes" => {
            let q = ByteQueue::open(&arg(1)?)?;
            let mut out = out.lock();
            for _ in 0..arg(2)?.parse::<usize>()? {
                let msg = q
                    .get_timeout(std::time::Duration::from_secs(30))
                    .map_err(|e| e.to_string())?;
                writeln!(out, "{}", String::from_utf8_lossy(&msg))?;
            }
        }
        "loan-put" => {
            let q = ByteQueue::open(&arg(1)?)?;
            let size = arg(3)?.parse::<usize>()?;
            for k in 0..arg(2)?.parse::<usize>()? {
                let mut loan = q.loan(size).map_err(|e| e.to_string())?;
                for (j, b) in loan.iter_mut().enumerate() {
                    *b = ((k + j) % 251) as u8;
                }
                loan.send().map_err(|e| e.to_string())?;
            }
        }
        "loan-check" => {
            let q = ByteQueue::open(&arg(1)?)?;
            let mut out = out.lock();
            for k in 0..arg(2)?.parse::<usize>()? {
                let msg = q
                    .get_loan_timeout(std::time::Duration::from_secs(30))
                    .map_err(|e| e.to_string())?;
                let ok = msg
                    .iter()
                    .enumerate()
                    .all(|(j, &b)| b == ((k + j) % 251) as u8);
                writeln!(out, "{} {}", msg.len(), if ok { "ok" } else { "bad" })?;
            }
        }
        "cbor-put" => {
            let q = CborQueue::<Record>::open(&arg(1)?)?;
            for i in 0..arg(2)?.parse::<u64>()? {
                q.put(record(i)).map_err(|e| e.to_string())?;
            }
        }
        "cbor-echo" => {
            let (from, to) = (
                CborQueue::<Record>::open(&arg(1)?)?,
                CborQueue::open(&arg(2)?)?,
            );
            let mut out = out.lock();
            let mut n = arg(3)?.parse::<usize>()?;
            while n > 0 {
                match from.get_timeout(std::time::Duration::from_secs(30)) {
                    Ok(mut r) => {
                        r.id += 1000;
                        r.tags.reverse();
                        to.put(r).map_err(|e| e.to_string())?;
                        n -= 1;
                    }
                    Err(GetError::Unreadable { reason }) => {
                        writeln!(out, "unreadable: {reason}")?;
                        out.flush()?;
                    }
                    Err(e) => return Err(e.to_string().into()),
                }
            }
        }
        "array-add" => {
            let a = Array::<f64>::open(&arg(1)?)?;
            let x: f64 = arg(2)?.parse()?;
            let mut g = a.lock_recover()?;
            for v in g.iter_mut() {
                *v += x;
            }
        }
        "value-add" => {
            let v = Value::<i64>::open(&arg(1)?)?;
            for _ in 0..arg(2)?.parse::<usize>()? {
                v.update(|x| *x += 1)?;
            }
        }
        "atomic-add" => {
            let v = AtomicValue::<i64>::open(&arg(1)?)?;
            for _ in 0..arg(2)?.parse::<usize>()? {
                v.fetch_add(1);
            }
        }
        "hold-lock" => {
            let l = Lock::open(&arg(1)?)?;
            let _g = l.lock_recover()?;
            writeln!(out.lock(), "held")?;
            loop {
                std::thread::park();
            }
        }
        "make-array" => {
            let n: usize = arg(2)?.parse()?;
            let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let _a = Array::<f64>::create_from(&arg(1)?, &values)?;
            writeln!(out.lock(), "ready")?;
            // Kept (and unlinked on drop) until the test closes stdin.
            for _ in std::io::stdin().lock().lines() {}
        }
        "dict-set" => {
            let d = DictOptions::new()
                .type_name("dict:py")
                .open_bytes(&arg(1)?)?;
            // The Python package's encoding: b"S" + a str key; b"B" + bytes as a value.
            let key = [b"S", arg(2)?.as_bytes()].concat();
            d.insert(&key, &[b"B", arg(3)?.as_bytes()].concat())?;
        }
        "dict-die" => {
            let d = DictOptions::new()
                .type_name("dict:py")
                .open_bytes(&arg(1)?)?;
            mproc_queue::dict::crash_points::arm(arg(2)?.parse()?);
            d.insert(b"Sdying", b"Bnever seen whole")?;
            return Err("the crash point was never reached".into());
        }
        other => return Err(format!("unknown command {other:?}").into()),
    }
    Ok(())
}
