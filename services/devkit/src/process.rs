//! Child-process helpers: run a command to completion, stop a server politely.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::DevkitError;

/// Run `cmd` to completion; on failure the error carries its stderr.
pub(crate) fn run(mut cmd: Command, what: &str) -> Result<String, DevkitError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DevkitError::Command {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(DevkitError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn signal(child: &Child, sig: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // ESRCH (already gone) is fine.
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Send `sig`, wait up to `grace` for the process to exit, then SIGKILL it.
pub(crate) fn stop(child: &mut Child, sig: Signal, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child, sig);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
