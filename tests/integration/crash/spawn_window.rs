//! The moments around a program's start, many times over, through the real
//! binary: a Ctrl-C the terminal sends to runbook's process group must not
//! reach a program being started, and a runbook killed as a program starts
//! must leave it noted, so that `resume` never starts it again beside it.

use super::proc::command;
use super::rng::{env_count, say, seed, Rng};
use crate::common::scratch;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn write_chain(dir: &Path, steps: usize) -> std::path::PathBuf {
    let mut body = String::from("runbook chain {\n  concurrency 1\n");
    for i in 0..steps {
        let after = if i == 0 {
            String::new()
        } else {
            format!(" after s{}", i - 1)
        };
        body.push_str(&format!(
            "  run s{i}{after} {{\n    command \"true\"\n  }}\n"
        ));
    }
    body.push_str("}\n");
    let file = dir.join("chain.runbook");
    std::fs::write(&file, body).expect("writes");
    file
}

fn status_json(state: &Path) -> serde_json::Value {
    let out = command(&[
        "--state".into(),
        state.display().to_string(),
        "status".into(),
        "--json".into(),
        "1".into(),
    ])
    .output()
    .expect("status runs");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A terminal's Ctrl-C goes to the whole foreground process group: here,
/// runbook leads a group of its own and the test signals all of it, at a
/// random moment of a chain of 60 instant steps, so that many land while a
/// program is being started.
#[test]
fn a_ctrl_c_to_the_process_group_never_fails_a_step() {
    let seed = seed("ctrl-c to the group");
    let mut rng = Rng::new(seed);
    let trials = env_count("RUNBOOK_CTRL_C_GROUP_TRIALS", 40);
    let dir = scratch("crash-ctrl-c-group");
    let file = write_chain(&dir, 60);
    // How long a whole run takes here: the signals land within it.
    let began = Instant::now();
    let whole = command(&[
        "--state".into(),
        dir.join("timing").display().to_string(),
        "run".into(),
        file.display().to_string(),
    ])
    .stdout(Stdio::null())
    .status()
    .expect("runs");
    assert!(whole.success());
    let span = began.elapsed();
    let mut landed = 0;
    for trial in 0..trials {
        let state = dir.join(format!("t{trial}"));
        let mut child = command(&[
            "--state".into(),
            state.display().to_string(),
            "run".into(),
            file.display().to_string(),
        ]);
        child.stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: setpgid(2) in the child before exec: its own group, as a
        // shell gives a job.
        unsafe {
            child.pre_exec(|| {
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let mut child = child.spawn().expect("starts");
        std::thread::sleep(rng.up_to(span));
        // SAFETY: kill(2) on the group the test's own child leads.
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGINT);
        }
        let ended = child.wait().expect("ends");
        if ended.code() == Some(130) {
            landed += 1;
        }
        let view = status_json(&state);
        for step in view[0]["steps"].as_array().into_iter().flatten() {
            assert_ne!(
                step["state"], "failed",
                "trial {trial} (RUNBOOK_CRASH_SEED={seed}): a Ctrl-C failed {}: {}",
                step["name"], step["detail"]
            );
        }
    }
    say(&format!(
        "crash: Ctrl-C to the whole process group in {trials} runs of 60 steps ({landed} before the end): no step failed"
    ));
}

/// A step that writes `start PID`, sleeps and writes `end PID`, with
/// `on-interrupt rerun`; runbook is killed the moment `start` appears, and
/// `resume` follows at once: it must see the program and refuse, so that
/// no two programs of the step are ever alive together.
#[test]
fn a_kill_as_a_program_starts_never_lets_resume_start_it_twice() {
    let trials = env_count("RUNBOOK_SPAWN_KILL_TRIALS", 20);
    let dir = scratch("crash-spawn-kill");
    let file = dir.join("one.runbook");
    std::fs::write(
        &file,
        "runbook one {\n  param ledger: path\n  run only {\n    command \"sh\"\n    args [\"-c\", \"echo \\\"start $$\\\" >> \\\"$1\\\"; sleep 0.3; echo \\\"end $$\\\" >> \\\"$1\\\"\", \"sh\", \"${ledger}\"]\n    on-interrupt rerun\n  }\n}\n",
    )
    .expect("writes");
    let mut refused = 0;
    for trial in 0..trials {
        let state = dir.join(format!("t{trial}"));
        let ledger = dir.join(format!("t{trial}.ledger"));
        std::fs::write(&ledger, "").expect("writes");
        let args = |verb: &str| -> Vec<String> {
            let mut a = vec!["--state".into(), state.display().to_string(), verb.into()];
            if verb == "run" {
                a.push(file.display().to_string());
                a.push("-p".into());
                a.push(format!("ledger={}", ledger.display()));
            } else {
                a.push("1".into());
            }
            a
        };
        let mut run = command(&args("run"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        let began = Instant::now();
        while !std::fs::read_to_string(&ledger).is_ok_and(|t| t.contains("start")) {
            assert!(began.elapsed() < Duration::from_secs(20), "never started");
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = run.kill();
        let _ = run.wait();
        // Resumed at once, then again until the run is over.
        loop {
            let out = command(&args("resume")).output().expect("resume runs");
            if out.status.success() {
                break;
            }
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(
                said.contains("the programs of these steps are still running: `only`"),
                "trial {trial}: {said}"
            );
            refused += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&ledger).expect("reads");
        let lines: Vec<&str> = text.lines().collect();
        // Every start is followed by its own end before the next start.
        for pair in lines.chunks(2) {
            let [start, end] = pair else {
                panic!("trial {trial}: a start without its end: {lines:?}");
            };
            assert_eq!(
                start.replace("start", "end"),
                *end,
                "trial {trial}: two programs of the step were alive at once: {lines:?}"
            );
        }
    }
    say(&format!(
        "crash: killed as its program started, {trials} times: resume refused {refused} times while it ran; never two at once"
    ));
}
