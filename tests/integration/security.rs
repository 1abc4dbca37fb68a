//! The adversarial suite: what another local user, a hostile server, odd
//! files and odd secrets can do to someone who runs runbook. One test (or
//! more) per finding of the security review (issue 13); each fails on the
//! version before its fix.
//!
//! Attacks that need a second user make one (`runbook-test-other`) and run
//! commands as it with `setpriv`; that needs root, which CI has. Elsewhere
//! they say loudly that they were skipped.

mod containment;
mod files;
mod other_user;
mod secrets;
mod terminal;

/// A loopback HTTP server for the attacks that need one: each request (up
/// to 20) gets what `answer` makes of its head. Its port.
fn http_server(answer: impl Fn(&[u8]) -> Vec<u8> + Send + 'static) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten().take(20) {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = stream.write_all(&answer(&head));
        }
    });
    port
}
