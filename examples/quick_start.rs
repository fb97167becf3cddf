//! The README's Quick start, as printed (tests/readme.rs runs it and checks that it prints
//! nothing, on stdout or stderr).

use mproc::prelude::*;

fn score(word: String) -> usize {
    word.chars().filter(|c| "aeiou".contains(*c)).count()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mproc::init(); // first thing: lets StartMethod::Spawn re-execute this binary as a worker
    let pool = Pool::new(4)?; // four worker processes
    let words = ["shared", "memory", "process", "pool"].map(String::from);
    assert_eq!(pool.map(score, words)?, [2, 2, 2, 2]);

    let mut p = Process::spawn(|n: u64| (1..=n).sum::<u64>(), 100)?;
    assert_eq!(p.join()?, 5050); // the child's return value; a panic comes back as an error
    Ok(())
}
