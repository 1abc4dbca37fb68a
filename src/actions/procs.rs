//! What `/proc` says of the processes a note names: who they belong to,
//! when they started, which process group they are in.

use super::spawn;

/// The real user of a process (the first `Uid:` of `/proc/PID/status`;
/// `/proc/PID`'s owner would be root for a program that made itself
/// undumpable, such as `ssh`).
pub fn real_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's real user, the one its programs run as.
pub(super) fn me() -> u32 {
    rustix::process::getuid().as_raw()
}

/// What `/proc/PID/stat` says of a process that we need.
pub(super) struct Stat {
    pub(super) started_ms: u64,
    pub(super) tick_ms: u64,
    pub(super) zombie: bool,
    pub(super) pgrp: i64,
}

pub(super) fn proc_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub(super) fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(19)?.parse::<u64>().ok()?;
    let per_second = Some(rustix::param::clock_ticks_per_second())
        .filter(|t| *t > 0)
        .unwrap_or(100);
    Some(Stat {
        started_ms: ticks.saturating_mul(1000) / per_second,
        tick_ms: 1000 / per_second + 1,
        zombie: rest.starts_with('Z'),
        pgrp: fields.get(2)?.parse().ok()?,
    })
}

/// The pids of every process on the machine.
pub(super) fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// Whether a process of group `pgid` other than a zombie is left.
pub(super) fn members_alive(pgid: u32) -> bool {
    if !spawn::group_exists(pgid as i32) {
        return false;
    }
    all_pids().any(|pid| proc_stat(pid).is_some_and(|s| s.pgrp == i64::from(pgid) && !s.zombie))
}

/// The processes of group `pgid` other than zombies.
pub(super) fn members(pgid: u32) -> Vec<u32> {
    all_pids()
        .filter(|pid| proc_stat(*pid).is_some_and(|s| s.pgrp == i64::from(pgid) && !s.zombie))
        .collect()
}

/// Whether `pid` is on its way out: its memory already given back (no
/// command line; the kernel counts it in its groups until its exit is
/// complete), or gone.
pub(super) fn exiting(pid: u32) -> bool {
    use std::io::Read;
    let mut first = [0u8; 1];
    std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|mut f| f.read(&mut first))
        .map_or(true, |n| n == 0)
}

/// Whether a process that may become a step's program is still on its way:
/// made by runbook at or after `since` (boot clock, ms), not yet out of
/// runbook's process group `pgid` (it leaves it only after it has written
/// its note), and a single thread. Another single-threaded process that
/// joined that group since (rare) costs only a refusal to resume, to be
/// tried again.
pub(super) fn starting_clone(pgid: u32, since: u64) -> bool {
    let me = std::process::id();
    // A clone that was about to note itself does so within microseconds of
    // being scheduled: look for a while before saying it is still there.
    let began = std::time::Instant::now();
    loop {
        let found = all_pids().filter(|pid| *pid != me).any(|pid| {
            let Some(stat) = proc_stat(pid) else {
                return false;
            };
            stat.pgrp == i64::from(pgid)
                && !stat.zombie
                && stat.started_ms + stat.tick_ms >= since
                && std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .is_ok_and(|s| s.lines().any(|l| l == "Threads:\t1"))
        });
        if !found || began.elapsed() > std::time::Duration::from_millis(500) {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
