//! `ringmqctl` as an operator runs it: a process per call, bounded by [`CTL_RUN_TIMEOUT`].

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::Broker;

/// One ringmqctl run: a few HTTP requests to a local broker.
pub const CTL_RUN_TIMEOUT: Duration = Duration::from_secs(30);

pub const RINGMQCTL: &str = env!("CARGO_BIN_EXE_ringmqctl");

#[derive(Debug)]
pub struct CtlOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    /// Asserts exit 0 and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "ringmqctl failed: {self:?}");
        self.stdout
    }
}

/// Runs `command` to completion, killing it past `timeout` (a hang is a test failure).
pub fn run_bounded(mut command: Command, timeout: Duration) -> CtlOutput {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let status = child.wait().ok();
        let _ = done_tx.send(CtlOutput {
            code: status.and_then(|s| s.code()),
            stdout: out,
            stderr: err,
        });
    });
    match done_rx.recv_timeout(timeout) {
        Ok(output) => output,
        Err(_) => {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) on our own child, not yet reaped (its waiter is blocked).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            panic!("{command:?} did not finish within {timeout:?}");
        }
    }
}

/// ringmqctl pointed at one management API, as one user.
pub struct Ctl {
    pub url: String,
    pub username: String,
    pub password: String,
}

impl Ctl {
    pub fn for_broker(broker: &Broker) -> Ctl {
        Ctl {
            url: format!("http://127.0.0.1:{}", broker.management_port()),
            username: "guest".to_owned(),
            password: "guest".to_owned(),
        }
    }

    pub fn as_user(&self, username: &str, password: &str) -> Ctl {
        Ctl {
            url: self.url.clone(),
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> CtlOutput {
        let mut command = Command::new(RINGMQCTL);
        command
            .arg("--url")
            .arg(&self.url)
            .arg("--username")
            .arg(&self.username)
            .arg("--password")
            .arg(&self.password)
            .args(args)
            .env_remove("RINGMQCTL_URL")
            .env_remove("RINGMQCTL_USERNAME")
            .env_remove("RINGMQCTL_PASSWORD");
        run_bounded(command, CTL_RUN_TIMEOUT)
    }

    /// Runs with `--formatter json`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--formatter", "json"];
        all.extend_from_slice(args);
        let stdout = self.run(&all).ok();
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
    }
}
