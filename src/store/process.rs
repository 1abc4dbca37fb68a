//! Whether a process is alive, asked the one way everything here asks it:
//! the owner of a run, the holder of a store, the writer of a temporary
//! file.

/// Whether process `pid` exists and has not ended. Another user's process
/// counts (kill(2) answers EPERM); a zombie, ended and not yet reaped, does
/// not; 0 and numbers beyond a pid's range are no process (kill(2) would
/// read 0 as "my process group" and a negative number as a group).
pub fn alive(pid: u32) -> bool {
    let Some(id) = process_id(pid) else {
        return false;
    };
    let exists = match rustix::process::test_kill_process(id) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    };
    exists && !zombie(id.as_raw_nonzero().get())
}

/// A process id as the kernel takes it: never 0 (my process group) nor
/// negative (a group), which a number from a file could be.
pub fn process_id(pid: u32) -> Option<rustix::process::Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .and_then(rustix::process::Pid::from_raw)
}

/// Sends `signal` to process `pid`, if it is a process id at all; whether
/// it was delivered is not asked (it may have ended meanwhile).
pub fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(id) = process_id(pid) {
        let _ = rustix::process::kill_process(id, signal);
    }
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::alive;

    #[test]
    fn zero_and_numbers_beyond_a_pid_are_no_process() {
        assert!(!alive(0), "kill(0, 0) asks about our own group");
        assert!(!alive(u32::MAX), "would be -1: every process");
        assert!(!alive(1 << 31));
        assert!(alive(std::process::id()));
        assert!(
            alive(1),
            "init is another user's process for most, and alive"
        );
    }

    #[test]
    fn a_child_that_ended_is_not_alive_before_or_after_it_is_reaped() {
        let mut child = std::process::Command::new("true").spawn().expect("starts");
        let pid = child.id();
        let began = std::time::Instant::now();
        // Ended but not reaped: a zombie.
        while alive(pid) {
            assert!(began.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().expect("reaped");
        assert!(!alive(pid));
    }
}
