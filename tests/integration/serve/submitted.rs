//! `runbook serve` holds its state directory's store and serves its
//! socket: `runbook run` there from any terminal of its user is submitted
//! to the server and driven in it, beside the scheduled runs; a SIGTERM
//! stops those runs at a checkpoint too, and they resume as after any stop.
//! A run started by hand before the server keeps the store until it ends;
//! the server takes it then.

use crate::common::*;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(dir: &std::path::Path, state: &std::path::Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .arg("--state")
            .arg(state)
            .arg("serve")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        let out = child.stdout.take().expect("piped");
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let kept = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                kept.lock().expect("lines").push(line);
            }
        });
        Server { child, seen }
    }

    fn wait_for(&self, text: &str) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if self
                .seen
                .lock()
                .expect("lines")
                .iter()
                .any(|l| l.contains(text))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no `{text}`:\n{}",
            self.seen.lock().expect("lines").join("\n")
        );
    }

    fn terminate(&self) {
        // SAFETY: kill(2) on the test's own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }
}

impl Drop for Server {
    /// A test that failed leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const GATED: &str = "runbook gated {\n  approve gate {\n    prompt \"go on?\"\n  }\n  run after_gate after gate {\n    command \"true\"\n  }\n}\n";

#[test]
fn runs_by_hand_go_to_the_server_which_stops_them_at_a_checkpoint_on_sigterm() {
    let dir = scratch("serve-submitted");
    let runbooks = dir.join("runbooks");
    std::fs::create_dir_all(&runbooks).expect("mkdir");
    let state = dir.join("state");
    let gated = write(&dir, "gated.runbook", GATED);
    let slow = write(
        &dir,
        "slow.runbook",
        "runbook slow {\n  run first {\n    shell \"sleep 1\"\n  }\n  run second after first {\n    command \"true\"\n  }\n}\n",
    );
    // A run by hand first: it holds the store; the server says so, and
    // takes the store once that run has ended.
    let by_hand = spawn(&state, &["run", path(&gated)]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let mut server = Server::start(&runbooks, &state);
    server.wait_for(
        "runs started by hand in this state directory do not run in this server while the store at",
    );
    let approved = rb(&state, &["approve", "1", "gate", "--as", "alice"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    assert_eq!(
        by_hand.wait_with_output().expect("ends").status.code(),
        Some(0)
    );
    server.wait_for("now serving the state directory's store");

    // Two runs by hand now, both in the server.
    let first = spawn(&state, &["run", path(&gated)]);
    wait_for(&state, 2, |s, _| s == "waiting for approval");
    let second = spawn(&state, &["run", path(&slow)]);
    wait_for(&state, 3, |_, steps| {
        steps.iter().any(|(n, s)| n == "first" && s == "running")
    });
    let listed = stdout(&rb(&state, &["status"]));
    assert_eq!(listed.lines().count(), 3, "{listed}");
    server.terminate();
    let first = first.wait_with_output().expect("ends");
    let second = second.wait_with_output().expect("ends");
    assert_eq!(first.status.code(), Some(130), "{}", stderr(&first));
    assert_eq!(second.status.code(), Some(130), "{}", stderr(&second));
    assert!(
        stdout(&first).starts_with("run 2: gated (")
            && stdout(&first).contains("driven by the process that holds the store"),
        "{}",
        stdout(&first)
    );
    assert!(
        stdout(&second).contains("run 3 stopped; continue it with: runbook resume 3"),
        "{}",
        stdout(&second)
    );
    let ended = server.child.wait().expect("the server ends");
    assert!(ended.success(), "{ended:?}");
    server.wait_for("stopped");
    // `first` had finished: only `second` runs on resume, here, with no
    // server.
    let (_, steps) = status(&state, 3);
    assert!(
        steps.contains(&("first".into(), "succeeded".into())),
        "{steps:?}"
    );
    let resumed = rb(&state, &["resume", "3"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert_eq!(status(&state, 3).0, "succeeded");
}

#[test]
fn a_runbook_the_server_cannot_schedule_is_a_problem_in_health_status_and_schedule() {
    let dir = scratch("serve-problems");
    let runbooks = dir.join("runbooks");
    std::fs::create_dir_all(&runbooks).expect("mkdir");
    let nightly = |secret: &str| {
        format!("runbook nightly {{\n  schedule \"0 2 * * *\"\n  param db: secret = env(\"{secret}\")\n  run check {{\n    command \"true\"\n  }}\n}}\n")
    };
    write(
        &runbooks,
        "nightly.runbook",
        nightly("RUNBOOK_TEST_UNSET_DB_URL"),
    );
    let state = dir.join("state");
    let mut server = Server::start(&runbooks, &state);
    server.wait_for("serving 0 scheduled runbooks");
    server.wait_for("1 file cannot be scheduled");

    let health = rb(&state, &["health"]);
    assert_eq!(health.status.code(), Some(1), "{}", stderr(&health));
    let said = stdout(&health);
    assert!(said.starts_with("problems: process "), "{said}");
    assert!(
        said.contains(", drives no run, schedules 0 runbooks\n"),
        "{said}"
    );
    assert!(
        said.contains("problem: ") && said.contains("RUNBOOK_TEST_UNSET_DB_URL"),
        "{said}"
    );
    let status = stdout(&rb(&state, &["status"]));
    assert!(
        status.contains("problem: ") && status.contains("RUNBOOK_TEST_UNSET_DB_URL"),
        "{status}"
    );
    // Set where `schedule` runs, not in the server: the server's view is said.
    let schedule = command(&state, &["schedule", path(&runbooks)])
        .env("RUNBOOK_TEST_UNSET_DB_URL", "postgres://here")
        .output()
        .expect("runs");
    assert_eq!(schedule.status.code(), Some(2), "{}", stderr(&schedule));
    assert!(
        stderr(&schedule).starts_with("the running server cannot schedule: "),
        "{}",
        stderr(&schedule)
    );

    // Fixed (a secret the server has): scheduled, and healthy.
    write(&runbooks, "nightly.runbook", nightly("PATH"));
    server.wait_for("loaded `nightly`");
    let began = Instant::now();
    loop {
        let health = rb(&state, &["health"]);
        if health.status.code() == Some(0) {
            assert!(
                stdout(&health).contains(", drives no run, schedules 1 runbooks"),
                "{}",
                stdout(&health)
            );
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{}",
            stdout(&health)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.terminate();
    assert!(server.child.wait().expect("ends").success());
    let none = rb(&state, &["health"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        stdout(&none).starts_with("no process holds "),
        "{}",
        stdout(&none)
    );
}
