//! A step's program from its start until it has been waited for: started
//! off the runtime's thread, and killed whole (its process group and its
//! cgroup) if whatever waits for it is dropped first.
#![allow(unsafe_code)] // tokio's AsyncFd registration: see tests/integration/layers.rs

use super::contain::Cgroup;
use super::groups::{Reserved, StepNotes};
use super::spawn::{self, Launch, Spawned};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A program's note slot, released (blanked once what it names is gone)
/// when the last of those who may start or wait for its program lets go:
/// the attempt, and the thread starting the program, which goes on with
/// the start when the attempt is dropped meanwhile.
pub(super) struct SlotRelease {
    notes: StepNotes,
    slot: usize,
    cgroup: Option<Cgroup>,
    /// The program's pid once it has started; 0 before.
    leader: AtomicU32,
}

impl SlotRelease {
    pub(super) fn new(notes: StepNotes, reserved: &Reserved) -> Arc<SlotRelease> {
        Arc::new(SlotRelease {
            notes,
            slot: reserved.index(),
            cgroup: reserved.cgroup(),
            leader: AtomicU32::new(0),
        })
    }
}

impl Drop for SlotRelease {
    fn drop(&mut self) {
        let leader = match self.leader.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        };
        self.notes.release(self.slot, leader, self.cgroup.as_ref());
    }
}

/// Starts the program on a thread of the blocking pool: starting one stops
/// the thread that does it until the program has called exec, and the
/// scheduler often keeps that thread waiting behind the new program on its
/// CPU; the runtime's thread meanwhile goes on recording results and
/// starting other steps.
pub(super) async fn start(
    launch: Launch,
    note: Option<Reserved>,
    release: Option<Arc<SlotRelease>>,
) -> Result<Spawned, String> {
    let started = tokio::task::spawn_blocking(move || {
        let slot = note.as_ref().map(Reserved::slot);
        let cgroup = note.as_ref().and_then(Reserved::cgroup);
        spawn::spawn(&launch, slot)
            .map(|s| {
                if let Some(release) = &release {
                    release.leader.store(s.pid, Ordering::SeqCst);
                }
                Started {
                    spawned: Some(s),
                    cgroup,
                    _release: release,
                }
            })
            .map_err(|e| {
                // spawn's own errors say what failed; a bare OS error not.
                if e.get_ref().is_some() {
                    e.to_string()
                } else {
                    crate::error::io_reason(&e)
                }
            })
    });
    match started.await {
        Ok(Ok(mut started)) => started
            .spawned
            .take()
            .ok_or_else(|| "the started program was lost".to_string()),
        Ok(Err(why)) => Err(why),
        Err(_) => Err("the start was interrupted".into()),
    }
}

/// A program just started, on its way to the step that waits for it: if
/// that step was stopped meanwhile, the program's whole group is killed,
/// and then its slot released (a field is dropped after `drop` has run).
struct Started {
    spawned: Option<Spawned>,
    cgroup: Option<Cgroup>,
    /// Held until the program is handed over or killed.
    _release: Option<Arc<SlotRelease>>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(spawned) = &self.spawned {
            Program {
                pid: spawned.pid,
                cgroup: self.cgroup.take(),
            }
            .kill();
            spawn::reap_later(spawned.pid);
        }
    }
}

/// A started program: the leader of its process group, and its cgroup if
/// it is contained in one.
#[derive(Clone)]
pub(super) struct Program {
    pub(super) pid: u32,
    pub(super) cgroup: Option<Cgroup>,
}

impl Program {
    /// Kills everything it started: its process group, and its cgroup
    /// (which holds what left the group too).
    pub(super) fn kill(&self) {
        spawn::kill_group(self.pid);
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
    }
}

/// A program of ours until it has been waited for: dropped before, its
/// whole process group is killed and it is reaped later.
pub(super) struct Child {
    program: Program,
    /// Readable once the program has ended (pidfd_open, Linux 5.3); without
    /// it, the end is looked for every 10 ms.
    ended: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    reaped: bool,
}

impl Child {
    pub(super) fn new(program: Program) -> Child {
        let ended = crate::store::process::process_id(program.pid)
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            })
            // SAFETY: the OwnedFd keeps the descriptor open and the same
            // for as long as the AsyncFd that owns it.
            .and_then(|fd| unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
                    .ok()
            });
        Child {
            program,
            ended,
            reaped: false,
        }
    }

    /// Waits for the program to end, and says how, without reaping it:
    /// until `reap`, its pid (and with it its process group's id) stays
    /// taken, so that killing what it left in its group can never reach a
    /// new group given the same number (pids come round within seconds on
    /// a busy machine: 32,768 of them by default).
    pub(super) async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        use rustix::process::{waitid, WaitId, WaitIdOptions};
        loop {
            let pid = crate::store::process::process_id(self.program.pid)
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
            if let Some(status) = waitid(WaitId::Pid(pid), options)? {
                return Ok(exit_status(&status));
            }
            match &self.ended {
                Some(fd) => fd.readable().await?.clear_ready(),
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Reaps the program once `wait` has seen it end and what it left in
    /// its group has been dealt with.
    pub(super) fn reap(&mut self) {
        if let Some(pid) = crate::store::process::process_id(self.program.pid) {
            if let Ok(Some(_)) =
                rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG)
            {
                self.reaped = true;
            }
        }
    }
}

/// A `waitid` status as the standard library's `ExitStatus`.
fn exit_status(status: &rustix::process::WaitIdStatus) -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    let raw = match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => (code & 0xff) << 8,
        (None, Some(signal)) => signal | if status.dumped() { 0x80 } else { 0 },
        (None, None) => 0,
    };
    std::process::ExitStatus::from_raw(raw)
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.program.kill();
            spawn::reap_later(self.program.pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid's state letter in /proc (`Z` for a zombie), if it exists.
    fn state_of(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')').next()?.trim_start().chars().next()
    }

    #[tokio::test]
    async fn an_ended_program_keeps_its_number_until_it_is_reaped() {
        let launch = spawn::Launch::new("true", &[], &[], None).expect("prepares");
        let spawned = start(launch, None, None).await.expect("starts");
        let mut child = Child::new(Program {
            pid: spawned.pid,
            cgroup: None,
        });
        let status = child.wait().await.expect("waits");
        assert!(status.success());
        // Seen ended, not yet reaped: its pid, and so its group's, is
        // still taken, and a kill of the group can reach no one else's.
        assert_eq!(state_of(spawned.pid), Some('Z'));
        child.reap();
        assert_eq!(state_of(spawned.pid), None, "reaped");
    }
}
