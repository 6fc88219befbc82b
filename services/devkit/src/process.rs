//! Child-process helpers: run a command to completion, stop a server politely.

use std::fs::File;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{DevkitError, log_tail};

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

/// Spawn a server with stdout and stderr appended to `log_path`, in its own process
/// group (a terminal's Ctrl-C reaches only our process, which stops it in order).
pub(crate) fn spawn_logged(cmd: &mut Command, log_path: &Path) -> Result<Child, DevkitError> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(DevkitError::io(log_path))?;
    let log_err = log.try_clone().map_err(DevkitError::io(log_path))?;
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|e| DevkitError::Command {
            what: format!("starting {}", cmd.get_program().to_string_lossy()),
            detail: e.to_string(),
        })
}

/// Poll `ready` every 20 ms until it answers true. Fails with the log's tail when
/// the child exits first (`Exited`) or `timeout` passes (`NotReady`, child killed).
pub(crate) async fn wait_ready<F, Fut>(
    child: &mut Option<Child>,
    what: String,
    log_path: &Path,
    timeout: Duration,
    mut ready: F,
) -> Result<(), DevkitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            *child = None;
            return Err(DevkitError::Exited {
                what,
                status: status.to_string(),
                log: log_tail(log_path, 15),
            });
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            return Err(DevkitError::NotReady {
                what,
                secs: timeout.as_secs(),
                log: log_tail(log_path, 15),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
