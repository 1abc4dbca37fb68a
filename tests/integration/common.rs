//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the real binary.
pub fn runbook(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("RUNBOOK_ALLOW_AS", "1")
        .output()
        .expect("the runbook binary starts")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory under the target dir, removed first if it exists.
pub fn scratch(name: &str) -> PathBuf {
    let dir = root().join("target").join("test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writes the test file");
    path
}

pub fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_with_extension(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Whether the machine's PostgreSQL (127.0.0.1:5432, user `postgres`,
/// trust) answers. Without it a test says loudly that it was skipped;
/// under CI (`CI=true`) it fails instead.
pub fn postgres_here(test: &str) -> bool {
    let addr = "127.0.0.1:5432".parse().expect("an address");
    let reachable =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok();
    if !reachable {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must have PostgreSQL at 127.0.0.1:5432 ({test})"
        );
        eprintln!("SKIPPED: {test} needs PostgreSQL at 127.0.0.1:5432");
    }
    reachable
}

/// Runs SQL with psql against `db` on the machine's server; its output.
pub fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-X",
            "-q",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql {sql}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// A database the test creates, dropped when the guard goes (also when
/// the test fails). One that already exists is never touched: `create`
/// returns `None` for it.
pub struct TestDb(pub String);

impl TestDb {
    pub fn create(name: &str) -> Option<TestDb> {
        let exists = psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        );
        if exists == "1" {
            return None;
        }
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Some(TestDb(name.to_string()))
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-X",
                "-q",
                "-d",
                "postgres",
                "-c",
            ])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0))
            .output();
    }
}

/// Whether `redis-server` and `redis-cli` are installed; the same policy
/// as `postgres_here`: skipped loudly, except under CI.
pub fn redis_here(test: &str) -> bool {
    let found = ["redis-server", "redis-cli"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must have redis-server and redis-cli ({test})"
        );
        eprintln!("SKIPPED: {test} needs redis-server and redis-cli");
    }
    found
}

/// A port of loopback that nothing listens on (a moment ago).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A redis-server of the test's own on a free port of loopback, keeping
/// its data in `dir` (`dump.rdb` after a `SAVE`); stopped when dropped.
pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    child: std::process::Child,
}

impl Redis {
    pub fn start(dir: &Path, password: Option<&str>) -> Redis {
        std::fs::create_dir_all(dir).expect("a directory");
        let port = free_port();
        let mut c = Command::new("redis-server");
        c.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dbfilename", "dump.rdb", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null());
        if let Some(p) = password {
            c.args(["--requirepass", p]);
        }
        let child = c
            .spawn()
            .expect("redis-server starts (the machine has Redis)");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed().as_secs() < 10,
                "redis-server did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Redis {
            port,
            dir: dir.to_path_buf(),
            child,
        }
    }

    /// `redis-cli ARGS...` against it; what it printed.
    pub fn cli(&self, password: Option<&str>, args: &[&str]) -> String {
        let mut c = Command::new("redis-cli");
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(p) = password {
            c.env("REDISCLI_AUTH", p);
        }
        let out = c.args(args).output().expect("redis-cli runs");
        stdout(&out).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The states of run 1's steps (name, state word), from `status --json`.
pub fn step_states(state: &Path) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(state)
        .args(["status", "1", "--json"])
        .output()
        .expect("the runbook binary starts");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or_default().to_string();
            (name, s["state"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// Waits until approval `step` of run 1 is asked for (an approval waits as
/// a running step), then approves it as `by` from this other process.
pub fn approve_when_asked(state: &Path, child: &mut std::process::Child, step: &str, by: &str) {
    let started = std::time::Instant::now();
    while !step_states(state)
        .iter()
        .any(|(n, s)| n == step && s == "running")
    {
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.stdout.take().map(|mut o| {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut o, &mut text);
                text
            });
            panic!("the run ended ({status}) before `{step}` asked for approval: {out:?}");
        }
        if started.elapsed().as_secs() > 60 {
            let _ = child.kill();
            panic!("`{step}` never asked");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .env("RUNBOOK_ALLOW_AS", "1")
        .arg("--state")
        .arg(state)
        .args(["approve", "1", step, "--as", by])
        .output()
        .expect("the runbook binary starts");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// --- Driving the binary on a state directory of a test's own ----------------

/// The binary with its own state directory.
pub fn rb(state: &Path, args: &[&str]) -> Output {
    command(state, args)
        .output()
        .expect("the runbook binary starts")
}

/// The binary on `state`. Approvals may be given a name with `--as` (as
/// in a shared login whose people name themselves, `RUNBOOK_ALLOW_AS=1`),
/// so that tests of other things can say who approves; the tests of
/// identity itself (`security/team.rs`, `steer.rs`) run without it.
pub fn command(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
    c.arg("--state")
        .arg(state)
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("RUNBOOK_ALLOW_AS", "1");
    c
}

pub fn spawn(state: &Path, args: &[&str]) -> Child {
    command(state, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the runbook binary starts")
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `status RUN --json`, parsed: (run state, step name → state word).
pub fn status(state: &Path, run: u32) -> (String, Vec<(String, String)>) {
    let out = rb(state, &["status", &run.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("status is JSON");
    let v = if v.is_array() { v[0].clone() } else { v };
    let steps = v["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    let name = s["name"].as_str().unwrap_or_default().to_string();
                    (name, s["state"].as_str().unwrap_or_default().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    (v["state"].as_str().unwrap_or_default().to_string(), steps)
}

/// Polls `status` until `done` holds, for at most 20 s.
pub fn wait_for(state: &Path, run: u32, done: impl Fn(&str, &[(String, String)]) -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let out = rb(state, &["status", &run.to_string(), "--json"]);
        if out.status.success() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&stdout(&out)) {
                let v = if v.is_array() { v[0].clone() } else { v };
                let steps: Vec<(String, String)> = v["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        (
                            s["name"].as_str().unwrap_or_default().to_string(),
                            s["state"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                if done(v["state"].as_str().unwrap_or_default(), &steps) {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("run {run} did not reach the expected state in 20 s");
}

pub fn ledger_lines(ledger: &Path) -> Vec<String> {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A step that appends its name to the ledger (argv only, no shell text).
pub fn ledger_step(name: &str, after: &str, extra: &str) -> String {
    let after = if after.is_empty() {
        String::new()
    } else {
        format!(" after {after}")
    };
    format!(
        "  run {name}{after} {{\n    command \"sh\"\n    args [\"-c\", \"echo $1 >> \\\"$2\\\"\", \"sh\", \"{name}\", \"${{ledger}}\"]\n{extra}  }}\n"
    )
}

pub fn ledger_runbook(body: &str) -> String {
    format!("runbook t {{\n  param ledger: path\n  concurrency 4\n{body}}}\n")
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn interrupt(child: &Child) {
    // SAFETY: kill(2) on a child we started; it reads no memory of ours.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
}
