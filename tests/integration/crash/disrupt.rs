//! What happens to a runbook process in a trial besides a SIGKILL: one
//! Ctrl-C, two, or a SIGSTOP held for a while and then a SIGCONT (and
//! perhaps a SIGKILL after), at random moments, some within its first
//! milliseconds.

use super::proc::{Ended, Proc};
use super::rng::Rng;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Disruption {
    None,
    Kill(Duration),
    /// A first Ctrl-C: running steps finish, nothing new starts.
    CtrlC(Duration),
    /// A second one after the first: running steps are stopped.
    CtrlCTwice(Duration, Duration),
    /// Stopped at the first, continued after the second; killed after the
    /// third if given.
    Stop(Duration, Duration, Option<Duration>),
}

impl Disruption {
    /// One of them, within `span` (about how long the process would take);
    /// a quarter of the moments fall within its first 5 ms.
    pub(crate) fn pick(rng: &mut Rng, span: Duration) -> Disruption {
        let mut at = || {
            if rng.one_in(4) {
                rng.up_to(Duration::from_millis(5))
            } else {
                rng.up_to(span)
            }
        };
        let first = at();
        let second = at() / 2;
        match rng.below(8) {
            0..=3 => Disruption::Kill(first),
            4 => Disruption::CtrlC(first),
            5 => Disruption::CtrlCTwice(first, second),
            _ => {
                let kill = rng.one_in(2).then(|| rng.up_to(span));
                Disruption::Stop(first, rng.up_to(Duration::from_millis(300)), kill)
            }
        }
    }

    pub(crate) fn apply(self, mut proc: Proc, marker: &str) -> Ended {
        proc.wait_taken();
        match self {
            Disruption::None => proc.end(None, marker),
            Disruption::Kill(at) => proc.end(Some(at), marker),
            Disruption::CtrlC(at) => {
                std::thread::sleep(at);
                proc.signal(libc::SIGINT);
                proc.end(None, marker)
            }
            Disruption::CtrlCTwice(at, then) => {
                std::thread::sleep(at);
                proc.signal(libc::SIGINT);
                std::thread::sleep(then);
                proc.signal(libc::SIGINT);
                proc.end(None, marker)
            }
            Disruption::Stop(at, held, kill) => {
                std::thread::sleep(at);
                proc.signal(libc::SIGSTOP);
                std::thread::sleep(held);
                proc.signal(libc::SIGCONT);
                proc.end(kill, marker)
            }
        }
    }

    /// Whether it can stop the process before its end (else it finishes).
    pub(crate) fn stops(self) -> bool {
        !matches!(self, Disruption::None)
    }
}
