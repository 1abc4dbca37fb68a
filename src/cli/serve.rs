//! `runbook serve DIR`: the server (`crate::serve`) on the system clock,
//! its log on standard output, until SIGTERM or Ctrl-C (a second one stops
//! the runs' steps too).

use crate::error::Error;
use crate::serve::{serve, Log, ServeConfig, SystemClock};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `runbook serve DIR`, on the system clock, until SIGTERM or Ctrl-C.
pub fn run(dir: &Path, state: &Path, contain: bool) -> Result<u8, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Start(format!("cannot start the scheduler: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| {
        Error::Start(format!(
            "cannot find the runbook binary to start runs with: {e}"
        ))
    })?;
    let log: Log = Arc::new(|line: &str| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    });
    let cfg = ServeConfig {
        dir: dir.to_path_buf(),
        state: state.to_path_buf(),
        exe,
        tick: Duration::from_millis(500),
        log,
        contain,
    };
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let fail = |e: std::io::Error| Error::Start(format!("cannot start the scheduler: {e}"));
        let mut term = signal(SignalKind::terminate()).map_err(fail)?;
        let mut int = signal(SignalKind::interrupt()).map_err(fail)?;
        let (tx, rx) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        serve(cfg, Arc::new(SystemClock), rx).await
    })?;
    Ok(super::EXIT_OK)
}
