//! Start six processes that each fill their part of a shared `Array` and add to a shared
//! `Value` under its lock; one of them panics and one is killed. Join each with a timeout and
//! print what the parent sees: results, Python-style exit statuses, errors.
//!
//! Run with `cargo run --release --example join_and_wait`.

use std::time::Duration;

use mproc::prelude::*;

const N: usize = 6;
const PER: usize = 1000;

#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    index: usize,
    array: String,
    total: String,
}

/// Fills `array[index*PER .. (index+1)*PER]` and adds its sum to `total`; returns that sum.
fn work(job: Job) -> u64 {
    let array = Array::<u64>::open(&job.array).expect("open array");
    let total = Value::<u64>::open(&job.total).expect("open value");
    if job.index == 3 {
        panic!("worker 3 refuses to work");
    }
    if job.index == 4 {
        // Waits to be killed by the parent (bounded, in case it is not).
        std::thread::sleep(Duration::from_secs(60));
    }
    let mut sum = 0;
    for i in 0..PER {
        let v = (job.index * PER + i) as u64;
        array.set(job.index * PER + i, v).expect("in range");
        sum += v;
    }
    total.update(|t| *t += sum).expect("lock");
    sum
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mproc::init();
    let tag = std::process::id();
    let array_name = format!("mproc-example-array-{tag}");
    let total_name = format!("mproc-example-total-{tag}");
    // The creator unlinks both names when they are dropped at the end of main.
    let array = Array::<u64>::create(&array_name, N * PER)?;
    let total = Value::<u64>::create(&total_name, 0)?;

    let mut procs = Vec::new();
    for index in 0..N {
        let job = Job {
            index,
            array: array_name.clone(),
            total: total_name.clone(),
        };
        procs.push(Process::spawn(work, job)?);
    }
    procs[4].kill()?;

    let mut expected = 0;
    for (index, p) in procs.iter_mut().enumerate() {
        let pid = p.pid();
        match p.join_timeout(Duration::from_secs(10)) {
            Ok(sum) => {
                expected += sum;
                println!("process {index} (pid {pid}): returned {sum}");
            }
            Err(e) => println!("process {index} (pid {pid}): {e}"),
        }
        println!("    exit status {:?}", p.exit_status());
    }
    let total = total.get()?;
    println!("shared total: {total} (sum of the returned values: {expected})");
    let filled = array.to_vec()?.iter().filter(|&&v| v != 0).count();
    println!("array cells written: {filled} of {}", N * PER);
    if total != expected {
        return Err("the shared total disagrees with the results".into());
    }
    Ok(())
}
