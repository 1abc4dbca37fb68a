//! The scheduler as the serve tests drive it: a clock they set, `serve` on
//! a thread of its own with its log kept, and the runbooks it fires.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use runbook::serve::{serve, Log, SchedClock, ServeConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// A clock that runs at real speed from a time the test sets.
pub struct TestClock(Mutex<(DateTime<Utc>, Instant)>);

impl TestClock {
    pub fn at(t: DateTime<Utc>) -> Arc<Self> {
        Arc::new(TestClock(Mutex::new((t, Instant::now()))))
    }
}

impl SchedClock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        let (t, since) = *self.0.lock().expect("clock");
        t + chrono::Duration::from_std(since.elapsed()).unwrap_or_default()
    }
}

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .expect("a time")
}

/// A scheduler serving `dir` on its own thread and runtime.
pub struct Scheduler {
    stop: watch::Sender<u32>,
    crash: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    log: Arc<Mutex<Vec<String>>>,
}

pub fn serve_in(dir: &Path, state: &Path, clock: Arc<TestClock>) -> Scheduler {
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&log);
    let sink: Log = Arc::new(move |line: &str| {
        kept.lock().expect("log").push(line.to_string());
    });
    let cfg = ServeConfig {
        dir: dir.to_path_buf(),
        state: state.to_path_buf(),
        exe: PathBuf::from(env!("CARGO_BIN_EXE_runbook")),
        tick: Duration::from_millis(100),
        log: sink,
        contain: true,
    };
    let (stop, stopped) = watch::channel(0);
    let (crash, crashed) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            tokio::select! {
                served = serve(cfg, clock, stopped) => served.map_err(|e| e.to_string()),
                // Dropping the future is the scheduler dying: no shutdown.
                _ = crashed => Ok(()),
            }
        })
    });
    Scheduler {
        stop,
        crash: Some(crash),
        thread: Some(thread),
        log,
    }
}

impl Scheduler {
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// Waits until a line of the log contains `text`; returns the line.
    pub fn wait_for(&self, text: &str, secs: u64) -> String {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(text)) {
                return line;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no `{text}` in {secs}s; the log:\n{}",
            self.lines().join("\n")
        );
    }

    /// SIGTERM twice (stop now), then waits for it to end.
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.stop.send(1);
        let _ = self.stop.send(2);
        self.join();
        self.lines()
    }

    pub fn crash(mut self) {
        if let Some(crash) = self.crash.take() {
            let _ = crash.send(());
        }
        self.join();
    }

    pub fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let ended = thread.join().expect("the scheduler thread ends");
            assert_eq!(ended, Ok(()), "the log:\n{}", self.lines().join("\n"));
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.stop.send(2);
    }
}

pub fn nightly(out: &Path, schedule: &str, steps: &str) -> String {
    format!(
        "runbook nightly {{\n  schedule {schedule}\n\n  param out: path = \"{}\"\n\n{steps}\n}}\n",
        out.display()
    )
}

/// `first` sleeps (with `extra` properties), then `second` appends "ran" to `out`.
pub fn sleep_then_mark(seconds: &str, extra: &str) -> String {
    format!(
        "  run first {{\n    command \"sleep\"\n    args [\"{seconds}\"]\n{extra}  }}\n\n  run second after first {{\n    command \"sh\"\n    args [\"-c\", \"echo ran >> \\\"$1\\\"\", \"sh\", \"${{out}}\"]\n  }}"
    )
}

pub const MARK: &str = "  run mark {\n    command \"sh\"\n    args [\"-c\", \"echo ran >> \\\"$1\\\"\", \"sh\", \"${out}\"]\n  }";

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether a `sleep SECONDS` with these exact seconds runs on the machine.
pub fn sleeping(seconds: &str) -> bool {
    let wanted = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
}
