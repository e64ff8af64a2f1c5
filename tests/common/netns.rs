//! Network namespaces a test makes for itself (never the host's own interfaces): namespaces
//! removed on drop, veth pairs between them, addresses the test assigns, and commands run
//! inside one (the broker, ringmqctl, curl, or this test binary re-run as a client, so every
//! socket the client opens is in that namespace). Needs root and iproute2.

use std::process::Command;

use super::ctl::{run_bounded, CtlOutput, CTL_RUN_TIMEOUT, RINGMQCTL};

/// `ip ARGS`, bounded.
pub fn ip(args: &[&str]) -> CtlOutput {
    let mut command = Command::new("ip");
    command.args(args);
    run_bounded(command, CTL_RUN_TIMEOUT)
}

/// `ip ARGS`, which must succeed.
pub fn ip_ok(args: &[&str]) {
    let output = ip(args);
    assert_eq!(output.code, Some(0), "ip {args:?}: {output:?}");
}

/// Why this machine cannot run a namespace test: not root, or `ip` (or another of `tools`,
/// each probed with `--version`) missing. `None`: it can.
pub fn skip_reason(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: cannot create network namespaces".to_string());
    }
    let probe = Command::new("ip").arg("-V").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Some("the `ip` command (iproute2) is missing".to_string());
    }
    for tool in tools {
        let probe = Command::new(tool).arg("--version").output();
        if !probe.is_ok_and(|o| o.status.success()) {
            return Some(format!("{tool} is missing"));
        }
    }
    None
}

/// Keeps the names of parallel runs apart (interface names are at most 15 bytes).
pub fn run_tag() -> String {
    format!("{}", std::process::id() % 1_000_000)
}

/// A network namespace with its loopback up; deleted on drop (with the ends of the veth pairs
/// inside it, and so the whole pairs).
pub struct Namespace {
    name: String,
}

impl Namespace {
    pub fn create(name: String) -> Namespace {
        ip_ok(&["netns", "add", &name]);
        let namespace = Namespace { name };
        namespace.ip_ok(&["link", "set", "lo", "up"]);
        namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`, which must succeed.
    pub fn ip_ok(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip_ok(&full);
    }

    /// Gives `link` (already in this namespace) `address_with_prefix` and sets it up.
    pub fn address(&self, link: &str, address_with_prefix: &str) {
        self.ip_ok(&["addr", "add", address_with_prefix, "dev", link]);
        self.ip_ok(&["link", "set", link, "up"]);
    }

    /// The launcher that runs a program here: `ip netns exec NAME`.
    pub fn launcher(&self) -> [&str; 4] {
        ["ip", "netns", "exec", self.name.as_str()]
    }

    /// `program` run inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// `ringmqctl --url http://127.0.0.1:PORT ARGS` from inside this namespace; its stdout
    /// (it must succeed).
    pub fn ringmqctl(&self, management_port: u16, args: &[&str]) -> String {
        self.ringmqctl_output(management_port, args).ok()
    }

    /// As [`Namespace::ringmqctl`], whatever its exit code: its code and both outputs.
    pub fn ringmqctl_output(&self, management_port: u16, args: &[&str]) -> CtlOutput {
        let url = format!("http://127.0.0.1:{management_port}");
        let mut command = self.command(RINGMQCTL);
        command.args(["--url", &url]).args(args);
        run_bounded(command, CTL_RUN_TIMEOUT)
    }

    /// This test binary run again inside this namespace with only `test` selected (its full
    /// name, see [`test_name`]), one thread, output shown.
    pub fn rerun_test(&self, test: &str) -> Command {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut command = self.command(exe.to_str().expect("a UTF-8 test binary path"));
        command.args(["--exact", test, "--nocapture", "--test-threads", "1"]);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let output = ip(&["netns", "del", &self.name]);
        if output.code != Some(0) {
            eprintln!(
                "could not delete network namespace {}: {output:?}",
                self.name
            );
        }
    }
}

/// A veth pair: `a_link` in `a`, `b_link` in `b`, both still down and without addresses.
pub fn veth(a: &Namespace, a_link: &str, b: &Namespace, b_link: &str) {
    ip_ok(&[
        "link", "add", a_link, "type", "veth", "peer", "name", b_link,
    ]);
    ip_ok(&["link", "set", a_link, "netns", a.name()]);
    ip_ok(&["link", "set", b_link, "netns", b.name()]);
}

/// The name libtest knows the test `function` of the module at `module_path` (`module_path!()`)
/// by: the path without the crate's name, so the same code selects `cluster::client_role` in
/// a binary holding many suites and `client_role` in a binary of its own.
pub fn test_name(module_path: &str, function: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, module)) => format!("{module}::{function}"),
        None => function.to_string(),
    }
}
