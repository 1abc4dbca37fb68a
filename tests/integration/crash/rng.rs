//! Randomness and settings: a repeatable generator, the seed, the counts
//! from the environment, and figures straight to stderr.

use std::io::Write;
use std::time::Duration;

/// xorshift64*: enough to spread kills, and repeatable from a seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// True once in `n` times.
    pub(crate) fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A delay from zero to `max`, both included, to the microsecond.
    pub(crate) fn up_to(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64 + 1))
    }
}

/// `RUNBOOK_CRASH_SEED`, else one from the clock; said on stderr.
pub(crate) fn seed(test: &str) -> u64 {
    let seed = std::env::var("RUNBOOK_CRASH_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            nanos ^ u64::from(std::process::id())
        });
    say(&format!(
        "crash: {test}: seed {seed} (RUNBOOK_CRASH_SEED={seed} repeats it)"
    ));
    seed
}

pub(crate) fn trials() -> usize {
    std::env::var("RUNBOOK_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Straight to stderr: libtest captures `eprintln!`, not this, so the
/// figures show in every test log.
pub(crate) fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// A count from the environment, or `default`.
pub(crate) fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
