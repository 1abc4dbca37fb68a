//! Running a program: argv by default (parameters never pass through a
//! shell), `/bin/sh -c` only when the step asks for `shell`. The program runs
//! in its own process group, so a timeout or a cancel stops everything it
//! started. Output is streamed line by line and kept up to a cap, so a step
//! that prints 100 MB keeps memory bounded.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    /// The program, or with `shell` the script for `/bin/sh -c`.
    pub program: String,
    pub args: Vec<String>,
    pub shell: bool,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Text kept from one stream: the first `cap` bytes, and how much was dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub text: String,
    pub dropped_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The program exited with this code.
    Exited(i32),
    /// A signal ended it (and not our timeout).
    Signalled(i32),
    /// The timeout passed; the whole process group was killed.
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    pub ended: Ended,
    pub stdout: Captured,
    pub stderr: Captured,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot start `{program}`: {why}")]
    Start { program: String, why: String },
    #[error("lost track of `{program}`: {why}")]
    Wait { program: String, why: String },
}

/// Runs the command to its end, or until `timeout`. `on_line` sees every
/// line as it comes (for the terminal); the result keeps the first `cap`
/// bytes of each stream.
pub async fn run(
    spec: &CommandSpec,
    timeout: Option<Duration>,
    cap: usize,
    on_line: impl FnMut(Stream, &str),
) -> Result<CommandResult, CommandError> {
    run_watched(spec, timeout, cap, |_| {}, on_line).await
}

/// `run`, telling `on_start` the process group as soon as the program runs.
pub async fn run_watched(
    spec: &CommandSpec,
    timeout: Option<Duration>,
    cap: usize,
    on_start: impl FnOnce(u32),
    mut on_line: impl FnMut(Stream, &str),
) -> Result<CommandResult, CommandError> {
    let mut command = if spec.shell {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(&spec.program);
        c
    } else {
        let mut c = Command::new(&spec.program);
        c.args(&spec.args);
        c
    };
    command
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        command.current_dir(dir);
    }
    // No `pre_exec` (PR_SET_PDEATHSIG, say): it makes the standard library
    // fork instead of posix_spawn, about a millisecond per step. A program
    // whose runbook was killed goes on; the caller records its `Group` so
    // that resume can see it.
    let program = spec.program.clone();
    let mut child = start(command).await.map_err(|why| CommandError::Start {
        program: program.clone(),
        why,
    })?;
    let group = child.id();
    if let Some(pid) = group {
        on_start(pid);
    }
    // Dropped with the future when the step is cancelled or aborted: the
    // whole group goes, not only the direct child.
    let mut guard = GroupGuard(group);
    // Both pipes are read here, in the task that waits for the program: no
    // task of their own, no channel. A program that prints faster than its
    // lines are handled waits on its pipe, so memory stays bounded.
    let mut out = child.stdout.take().map(Lines::new);
    let mut err = child.stderr.take().map(Lines::new);
    let mut stdout = Captured::default();
    let mut stderr = Captured::default();
    let collect = async {
        loop {
            // Standard output first when both have a line, the order a
            // program usually wrote them in. A busy standard output can only
            // delay standard error: its writer waits on a full pipe.
            let (stream, line) = tokio::select! {
                biased;
                Some(line) = next_line(&mut out) => (Stream::Stdout, line),
                Some(line) = next_line(&mut err) => (Stream::Stderr, line),
                else => break,
            };
            on_line(stream, &line);
            let kept = if stream == Stream::Stdout {
                &mut stdout
            } else {
                &mut stderr
            };
            keep(kept, &line, cap);
        }
    };
    let waited = async {
        let (status, ()) = tokio::join!(child.wait(), collect);
        status
    };
    let status = match timeout {
        Some(limit) => match tokio::time::timeout(limit, waited).await {
            Ok(status) => status,
            Err(_) => {
                kill_group(group);
                return Ok(CommandResult {
                    ended: Ended::TimedOut,
                    stdout,
                    stderr,
                });
            }
        },
        None => waited.await,
    }
    .map_err(|e| CommandError::Wait {
        program,
        why: e.to_string(),
    })?;
    guard.0 = None;
    use std::os::unix::process::ExitStatusExt;
    let ended = match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(signal)) => Ended::Signalled(signal),
        (None, None) => Ended::Signalled(0),
    };
    Ok(CommandResult {
        ended,
        stdout,
        stderr,
    })
}

/// Starts the program on a thread of the blocking pool. Starting one blocks
/// the thread that does it until the program is running (posix_spawn
/// waits for the new process's exec), and the scheduler often keeps that
/// thread waiting behind the new program on its CPU: the runtime's thread
/// meanwhile goes on recording results and starting other steps.
async fn start(mut command: Command) -> Result<tokio::process::Child, String> {
    let started = tokio::task::spawn_blocking(move || {
        command
            .spawn()
            .map(|child| Started(Some(child)))
            .map_err(|e| crate::error::io_reason(&e))
    });
    match started.await {
        Ok(Ok(mut started)) => started
            .0
            .take()
            .ok_or_else(|| "the started program was lost".to_string()),
        Ok(Err(why)) => Err(why),
        Err(_) => Err("the start was interrupted".into()),
    }
}

/// A program just started, on its way to the step that waits for it: if
/// that step was stopped meanwhile, the program's whole group is killed.
struct Started(Option<tokio::process::Child>);

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(child) = &self.0 {
            kill_group(child.id());
        }
    }
}

/// A pipe read line by line; a line longer than 64 KiB comes in pieces, so
/// that one endless line cannot grow a buffer without bound.
struct Lines<R> {
    reader: BufReader<R>,
    /// What was read of the line so far.
    line: Vec<u8>,
    done: bool,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    const LONGEST: usize = 64 * 1024;
    /// Reads are this big; a longer line gathers in `line`. Two 64 KiB
    /// buffers per program made the allocator give memory back and take
    /// it again (page faults) for every step.
    const READ: usize = 8 * 1024;

    fn new(pipe: R) -> Self {
        Lines {
            reader: BufReader::with_capacity(Self::READ, pipe),
            line: Vec::new(),
            done: false,
        }
    }

    /// The next line (or piece), `None` at the end of the pipe. Safe to
    /// cancel (the other pipe had a line first): what was read stays in
    /// `line`, since nothing is awaited between reading and keeping it.
    async fn next(&mut self) -> Option<String> {
        while !self.done {
            let used = match self.reader.fill_buf().await {
                Ok([]) | Err(_) => {
                    self.done = true;
                    break;
                }
                Ok(buf) => {
                    let room = Self::LONGEST - self.line.len();
                    let end = match buf.iter().take(room).position(|b| *b == b'\n') {
                        Some(i) => i + 1,
                        None => buf.len().min(room),
                    };
                    self.line.extend_from_slice(&buf[..end]);
                    end
                }
            };
            self.reader.consume(used);
            if self.line.ends_with(b"\n") || self.line.len() >= Self::LONGEST {
                break;
            }
        }
        if self.line.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        Some(text)
    }
}

/// The next line of a pipe, if there is a pipe and it has not ended.
async fn next_line<R: AsyncRead + Unpin>(lines: &mut Option<Lines<R>>) -> Option<String> {
    match lines {
        Some(lines) => lines.next().await,
        None => None,
    }
}

fn keep(kept: &mut Captured, line: &str, cap: usize) {
    let room = cap.saturating_sub(kept.text.len());
    if line.len() <= room {
        kept.text.push_str(line);
        return;
    }
    let mut cut = room;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    kept.text.push_str(&line[..cut]);
    kept.dropped_bytes += (line.len() - cut) as u64;
}

/// A process group that may outlive the runbook process that started it:
/// its leader, and when the leader started on the boot clock, so that a
/// reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub pid: u32,
    /// Milliseconds since boot, read just after the program started.
    pub started: u64,
}

impl Group {
    /// The group `pid` leads, started a moment ago. Reads the clock, not
    /// `/proc`: three system calls fewer for every program a step runs.
    pub fn started_now(pid: u32) -> Group {
        Group {
            pid,
            started: boot_clock_ms(),
        }
    }

    /// Whether the same process still runs (not a zombie, not a reused
    /// pid). The kernel counts start times in ticks (10 ms here); a process
    /// that started more than a second before the noted time, or after it,
    /// is another one.
    pub fn alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let Some(ticks) = rest
            .split_whitespace()
            .nth(19)
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return false;
        };
        // SAFETY: sysconf reads a configuration value; it touches no memory of ours.
        let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
            .ok()
            .filter(|t| *t > 0)
            .unwrap_or(100);
        let started = ticks.saturating_mul(1000) / per_second;
        let tick = 1000 / per_second + 1;
        !rest.starts_with('Z') && started + 1000 >= self.started && started <= self.started + tick
    }

    pub fn kill(&self) {
        if self.alive() {
            kill_group(Some(self.pid));
        }
    }
}

/// `CLOCK_BOOTTIME` in milliseconds: the clock `/proc/PID/stat` counts a
/// process's start on.
fn boot_clock_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    unsafe {
        libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now);
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000
}

/// Kills the group when dropped before the command ended.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0.take());
    }
}

/// Kills the process group the command leads: its children too.
fn kill_group(leader: Option<u32>) {
    if let Some(pid) = leader.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals a process group; it reads no memory of ours.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str]) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..CommandSpec::default()
        }
    }

    async fn run_quietly(
        spec: &CommandSpec,
        timeout: Option<Duration>,
        cap: usize,
    ) -> CommandResult {
        run(spec, timeout, cap, |_, _| {}).await.expect("runs")
    }

    #[tokio::test]
    async fn arguments_reach_the_program_verbatim_without_a_shell() {
        let dir = std::env::temp_dir().join(format!("runbook-argv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut s = spec("printf", &["%s|", "$(touch injected)", "a b", "; rm -rf x"]);
        s.cwd = Some(dir.clone());
        let r = run_quietly(&s, None, 1024).await;
        assert_eq!(r.ended, Ended::Exited(0));
        assert_eq!(r.stdout.text, "$(touch injected)|a b|; rm -rf x|");
        assert!(!dir.join("injected").exists(), "nothing was run by a shell");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn env_cwd_exit_code_and_stderr_are_kept() {
        let s = CommandSpec {
            program: "echo \"$GREETING from $(pwd)\" >&2; exit 3".into(),
            shell: true,
            env: vec![("GREETING".into(), "hello".into())],
            cwd: Some("/tmp".into()),
            ..CommandSpec::default()
        };
        let r = run_quietly(&s, None, 1024).await;
        assert_eq!(r.ended, Ended::Exited(3));
        assert_eq!(r.stderr.text, "hello from /tmp\n");
    }

    #[tokio::test]
    async fn a_flood_of_output_is_capped_and_counted() {
        let s = spec("/bin/sh", &["-c", "yes 0123456789 | head -c 20000000"]);
        let mut lines = 0usize;
        let r = run(&s, None, 1000, |_, _| lines += 1).await.expect("runs");
        assert_eq!(r.ended, Ended::Exited(0));
        assert_eq!(r.stdout.text.len(), 1000);
        assert_eq!(r.stdout.dropped_bytes, 20_000_000 - 1000);
        assert_eq!(lines, 20_000_000 / 11 + 1, "every line was streamed");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let pidfile = std::env::temp_dir().join(format!("runbook-group-{}", std::process::id()));
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let s = CommandSpec {
            program: script,
            shell: true,
            ..CommandSpec::default()
        };
        let r = run_quietly(&s, Some(Duration::from_millis(300)), 1024).await;
        assert_eq!(r.ended, Ended::TimedOut);
        let child: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("a pid");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Killed, or a zombie waiting for whoever adopted it to reap it: not running.
        let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let alive = state
            .split(") ")
            .nth(1)
            .is_some_and(|rest| !rest.starts_with('Z'));
        let _ = std::fs::remove_file(&pidfile);
        assert!(!alive, "the background child of the script was killed too");
    }

    #[tokio::test]
    async fn a_missing_program_is_one_plain_sentence() {
        let err = run(&spec("/no/such/program", &[]), None, 10, |_, _| {})
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start `/no/such/program`: no such file"
        );
    }
}
