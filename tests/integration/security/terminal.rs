//! Control characters from step output and from servers: shown as
//! escapes on every channel a person reads, never obeyed by the terminal.

use crate::common::*;
use crate::standin::Standin;

/// A server that answers every request with `status` and `body`.
fn server(status: u16, body: &'static str) -> u16 {
    Standin::start(move |_, _| (status, body.to_string())).port()
}

/// No byte a terminal would obey: escape, bell, carriage return, C1.
fn inert(channel: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for (i, c) in text.char_indices() {
        let control = matches!(c, '\0'..='\x08' | '\x0b'..='\x1f' | '\x7f'..='\u{9f}');
        assert!(
            !control,
            "{channel} has {:?} at {i}: {:?}",
            c,
            &text[i.saturating_sub(20)..]
        );
    }
}

#[test]
fn control_characters_from_programs_and_servers_are_never_obeyed() {
    let dir = scratch("sec-terminal");
    let state = dir.join("state");
    // Prometheus's error, with an OSC 52 clipboard write in it.
    let port = server(400, "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"bad \\u001b]52;c;cHduZWQ=\\u0007 query\"}");
    let file = write(
        &dir,
        "t.runbook",
        format!(
            "runbook t {{\n  run loud {{\n    shell \"printf 'a\\\\033[2J\\\\033]0;title\\\\007 b\\\\n'; printf 'evil\\\\r  loud | ✓ succeeded\\\\n' >&2; printf '\\\\302\\\\233c\\\\n'\"\n  }}\n  verify rate after loud {{\n    prometheus \"up\"\n    server \"http://127.0.0.1:{port}\"\n    expect value < 1\n  }}\n}}\n"
        ),
    );
    let run = rb(&state, &["run", path(&file)]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    inert("the run's output", &run.stdout);
    inert("the run's errors", &run.stderr);
    let shown = format!("{}{}", stdout(&run), stderr(&run));
    assert!(shown.contains("\\x1b[2J"), "shown as an escape: {shown}");
    assert!(shown.contains("evil\\x0d  loud"), "{shown}");
    for args in [vec!["status"], vec!["status", "1"], vec!["logs", "1"]] {
        let out = rb(&state, &args);
        inert(&format!("{args:?}"), &out.stdout);
        inert(&format!("{args:?}'s errors"), &out.stderr);
    }
    let status = stdout(&rb(&state, &["status", "1"]));
    assert!(
        status.contains("Prometheus answered 400: bad \\x1b]52;c;"),
        "{status}"
    );
}
