//! A Rust process for the Python package's tests: it opens, by name, objects a Python process
//! made (or makes them for Python to open), as a user's Rust service would.
//!
//! ```text
//! peer put-bytes NAME N        puts b"rust-0" .. b"rust-{N-1}" on ByteQueue NAME
//! peer get-bytes NAME N        takes N messages from ByteQueue NAME, prints each on a line
//! peer array-add NAME X        adds X to every f64 of Array NAME, under its lock
//! peer value-add NAME K        adds 1 to the i64 Value NAME, K times, each under its lock
//! peer hold-lock NAME          takes Lock NAME, prints "held", then waits to be killed
//! peer make-array NAME N       creates Array<f64> NAME = [0, 1, .., N-1], prints "ready",
//!                              keeps it until stdin closes
//! peer dict-set NAME K V        sets str key K to bytes V in Python Dict NAME
//! peer dict-die NAME STEP       starts setting a key of Python Dict NAME and SIGKILLs itself
//!                              at the STEPth store of that write (`crash-points`)
//! ```

use std::io::{BufRead, Write};

use mproc_array::{Array, Value};
use mproc_queue::{ByteQueue, DictOptions};
use mproc_sync::Lock;

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
