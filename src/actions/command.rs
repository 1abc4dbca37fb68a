//! Running a program: argv by default (parameters never pass through a
//! shell), `/bin/sh -c` only when the step asks for `shell`. The program runs
//! in its own process group (`spawn.rs`), and in a cgroup of its own where
//! there are (`contain.rs`), so a timeout or a cancel stops everything it
//! started. Output is streamed line by line and kept up to a
//! cap, so a step that prints 100 MB keeps memory bounded.

use super::child::{start, Child, Program, SlotRelease};
use super::groups::{Reserved, StepNotes};
use super::spawn::Launch;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    /// The program, or with `shell` the script for `/bin/sh -c`.
    pub program: String,
    pub args: Vec<String>,
    pub shell: bool,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Where the program notes itself before it runs, when it is a step's.
    pub notes: Option<StepNotes>,
    /// Variables of runbook's environment the program does not get: those
    /// the run's secrets were read from (a step that needs one maps it
    /// with `env NAME value`).
    pub withheld: Vec<String>,
    /// The environment the program starts from, when it is not runbook's
    /// own (a run submitted from another terminal).
    pub inherit: Option<std::sync::Arc<super::spawn::Environment>>,
}

/// How a step's helper program (pg_dump, psql) is started: noted as the
/// step's, from the run's environment.
#[derive(Debug, Clone, Default)]
pub struct Launching {
    pub notes: Option<StepNotes>,
    pub inherit: Option<std::sync::Arc<super::spawn::Environment>>,
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
/// bytes of each stream. With `spec.notes`, the program notes itself
/// before it runs, and its note is blanked once it has ended and its group
/// (and cgroup) is gone, whether this returns or is dropped (a step's
/// timeout, a second Ctrl-C kill it then); a note stays, for `resume` to
/// see, while something it names is alive.
pub async fn run(
    spec: &CommandSpec,
    timeout: Option<Duration>,
    cap: usize,
    on_line: impl FnMut(Stream, &str),
) -> Result<CommandResult, CommandError> {
    let reserved = match &spec.notes {
        Some(notes) => Some(notes.reserve().map_err(|why| CommandError::Start {
            program: spec.program.clone(),
            why,
        })?),
        None => None,
    };
    // Held here and by the thread that starts the program: the slot is
    // released when both have let go, so an attempt dropped while its
    // program is being started never frees a slot that program then notes
    // itself in (and joins the cgroup of).
    let release = match (&spec.notes, &reserved) {
        (Some(notes), Some(reserved)) => Some(SlotRelease::new(notes.clone(), reserved)),
        _ => None,
    };
    run_noted(spec, timeout, cap, reserved, release, on_line).await
}

async fn run_noted(
    spec: &CommandSpec,
    timeout: Option<Duration>,
    cap: usize,
    note: Option<Reserved>,
    release: Option<std::sync::Arc<SlotRelease>>,
    mut on_line: impl FnMut(Stream, &str),
) -> Result<CommandResult, CommandError> {
    let program = spec.program.clone();
    let failed = |why: String| CommandError::Start {
        program: program.clone(),
        why,
    };
    let launch = if spec.shell {
        Launch::new_in(
            spec.inherit.clone(),
            "/bin/sh",
            &["-c".to_string(), spec.program.clone()],
            &spec.env,
            spec.cwd.as_deref(),
        )
    } else {
        Launch::new_in(
            spec.inherit.clone(),
            &spec.program,
            &spec.args,
            &spec.env,
            spec.cwd.as_deref(),
        )
    }
    .map(|launch| launch.withholding(&spec.withheld, &spec.env))
    .map_err(failed)?;
    let cgroup = note.as_ref().and_then(Reserved::cgroup);
    let mut uncontained = note
        .as_ref()
        .and_then(|n| n.uncontained().map(str::to_string));
    let spawned = start(launch, note, release).await.map_err(failed)?;
    let pid = spawned.pid;
    if let Some(e) = &spawned.uncontained {
        uncontained = Some(format!(
            "it could not join its cgroup: {}",
            crate::error::io_reason(e)
        ));
    }
    if let Some(why) = uncontained {
        on_line(
            Stream::Stderr,
            &format!("runbook: this program is not in a cgroup of its own ({why}); what it starts in a new session (setsid) is not stopped with it\n"),
        );
    }
    let started = Program { pid, cgroup };
    // Dropped with the future when the step is cancelled or aborted: the
    // whole group goes, not only the direct child.
    let mut child = Child::new(started.clone());
    let pipe = |fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map(Lines::new);
    let (out, err) = match (pipe(spawned.stdout), pipe(spawned.stderr)) {
        (Ok(out), Ok(err)) => (out, err),
        (Err(e), _) | (_, Err(e)) => return Err(failed(crate::error::io_reason(&e))),
    };
    // Both pipes are read here, in the task that waits for the program: no
    // task of their own, no channel. A program that prints faster than its
    // lines are handled waits on its pipe, so memory stays bounded.
    let (mut out, mut err) = (Some(out), Some(err));
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
    let left_behind = std::sync::atomic::AtomicBool::new(false);
    let waited = async {
        let mut collect = std::pin::pin!(collect);
        let mut wait = std::pin::pin!(child.wait());
        let status = tokio::select! {
            status = &mut wait => status,
            () = &mut collect => return wait.await,
        };
        // The program has ended, but what it started in the background may
        // hold its output open: the step ends with its program, and the
        // rest of its process group is stopped (a step's programs do not
        // outlive it, as on a timeout or a cancel).
        if tokio::time::timeout(OUTPUT_AFTER_EXIT, &mut collect)
            .await
            .is_err()
        {
            left_behind.store(true, std::sync::atomic::Ordering::Relaxed);
            started.kill();
            // A holder outside the group (it called setsid) and not
            // contained in a cgroup is not waited for.
            let _ = tokio::time::timeout(OUTPUT_AFTER_EXIT, &mut collect).await;
        }
        status
    };
    let status = match timeout {
        Some(limit) => match tokio::time::timeout(limit, waited).await {
            Ok(status) => status,
            Err(_) => {
                started.kill();
                // The leader is reaped at once; what else was in its group
                // is for the caller to see gone.
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                child.reap();
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
    // Only now, what it left in its group dealt with, may its number go.
    child.reap();
    if left_behind.into_inner() {
        on_line(
            Stream::Stderr,
            "runbook: the program ended, but processes it started kept its output open; they were stopped with it (start a service through its manager, not with `&`)\n",
        );
    }
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

/// How long, after a step's program has ended, its output may stay open
/// (a last line still in a pipe) before what holds it is stopped.
const OUTPUT_AFTER_EXIT: Duration = Duration::from_secs(1);

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
        // A piece cut at 64 KiB ends at a character, not inside one: the
        // bytes of a character cut in two would each become U+FFFD, and a
        // secret containing it would no longer be recognised.
        let keep = if self.done || self.line.ends_with(b"\n") {
            0
        } else {
            incomplete_tail(&self.line)
        };
        let rest = self.line.split_off(self.line.len() - keep);
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line = rest;
        Some(text)
    }
}

/// How many bytes at the end of `bytes` begin a UTF-8 character that is
/// not complete (0 to 3).
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(4) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
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

    #[test]
    fn a_piece_never_ends_inside_a_character() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail("aé".as_bytes()), 0);
        assert_eq!(incomplete_tail(&"aé".as_bytes()[..2]), 1);
        assert_eq!(incomplete_tail(&"a€".as_bytes()[..3]), 2);
        assert_eq!(incomplete_tail(&"a😀".as_bytes()[..4]), 3);
        assert_eq!(incomplete_tail("a😀".as_bytes()), 0);
        assert_eq!(incomplete_tail(&[0x80, 0x80, 0x80, 0x80, 0x80]), 0);
    }

    #[tokio::test]
    async fn a_background_process_holding_the_output_ends_with_its_program() {
        let dir = std::env::temp_dir().join(format!("runbook-holder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let pidfile = dir.join("pid");
        let script = format!("sleep 60 & echo $! > {}; echo started", pidfile.display());
        let began = std::time::Instant::now();
        let mut lines = Vec::new();
        let result = run(
            &spec("sh", &["-c", &script]),
            Some(Duration::from_secs(30)),
            1 << 20,
            |_, line| lines.push(line.to_string()),
        )
        .await
        .expect("runs");
        assert_eq!(result.ended, Ended::Exited(0));
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{:?}",
            began.elapsed()
        );
        assert!(
            lines.iter().any(|l| l.contains("kept its output open")),
            "{lines:?}"
        );
        let holder: u32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("a pid");
        let gone = (0..100).any(|_| {
            let alive = crate::store::process::alive(holder);
            if alive {
                std::thread::sleep(Duration::from_millis(50));
            }
            !alive
        });
        assert!(gone, "the background sleep outlived its step");
        let _ = std::fs::remove_dir_all(&dir);
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
    async fn a_program_starts_from_the_environment_it_is_given_not_runbooks() {
        let given = super::super::spawn::Environment::of(&[
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("SUBMITTED_FROM".into(), "terminal 2".into()),
            ("HIDDEN".into(), "s3cret".into()),
        ]);
        let s = CommandSpec {
            program: "echo \"$SUBMITTED_FROM|${HOME-unset}|${HIDDEN-withheld}|$SET\"".into(),
            shell: true,
            env: vec![("SET".into(), "by the step".into())],
            withheld: vec!["HIDDEN".into()],
            inherit: Some(std::sync::Arc::new(given)),
            ..CommandSpec::default()
        };
        let r = run_quietly(&s, None, 1024).await;
        assert_eq!(r.ended, Ended::Exited(0));
        // HOME is runbook's own (the tests have one) and is not passed on.
        assert_eq!(r.stdout.text, "terminal 2|unset|withheld|by the step\n");
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
