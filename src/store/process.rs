//! Whether a process is alive, asked the one way everything here asks it:
//! the owner of a run, the holder of a store, the writer of a temporary
//! file.

/// Whether process `pid` exists and has not ended. Another user's process
/// counts (kill(2) answers EPERM); a zombie, ended and not yet reaped, does
/// not; 0 and numbers beyond a pid's range are no process (kill(2) would
/// read 0 as "my process group" and a negative number as a group).
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !zombie(pid)
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
