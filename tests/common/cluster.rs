//! Three ringmq nodes in a cluster, each in a network namespace the test makes (veth pairs to a
//! bridge in a hub namespace of its own, addresses the test assigns; never the host's own
//! interfaces), stopped on drop before their namespaces go. The set-up tests/it/cluster.rs
//! and tests/it/haproxy.rs share; a [`Layout`] keeps the names and addresses of two suites
//! apart when they run side by side in one test process.

use std::time::{Duration, Instant};

use super::ctl::{run_bounded, CTL_RUN_TIMEOUT};
use super::netns::{self, Namespace};
use super::Broker;

pub const NODES: usize = 3;
const PREFIX_LENGTH: &str = "24";
pub const CLUSTER_PORT: &str = "25672";
pub const SECRET: &str = "the-shared-cluster-secret";
/// Catching up, links coming back, servers seen up or down: bounded polls.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Between two looks at a condition that does not hold yet (a poll interval, not a wait).
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// One curl request's own bound (`--max-time`, seconds), within `CTL_RUN_TIMEOUT`.
const CURL_MAX_TIME_SECONDS: &str = "20";

/// Names and addresses of one suite's cluster.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Namespace names start with it: `PREFIX-h-<pid>` (the hub), `PREFIX-n0-<pid>`.
    pub namespace_prefix: &'static str,
    /// The two letters interface names start with (`rq0a<pid>`; at most 15 bytes in all).
    pub link_prefix: &'static str,
    /// The nodes' /24: node i is `SUBNET.(i+1)`.
    pub subnet: &'static str,
}

impl Layout {
    pub fn address(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// The flags of node `i`, holding `secret`.
    pub fn node_args(&self, i: usize, secret: &str) -> Vec<String> {
        let mut args = vec![
            "--listen".to_string(),
            self.address(i),
            "--node-name".to_string(),
            node_name(i),
            "--cluster-port".to_string(),
            CLUSTER_PORT.to_string(),
            "--cluster-secret".to_string(),
            secret.to_string(),
        ];
        for peer in (0..NODES).filter(|&p| p != i) {
            args.push("--peer".to_string());
            args.push(format!(
                "{}={}:{CLUSTER_PORT}",
                node_name(peer),
                self.address(peer)
            ));
        }
        args
    }
}

pub fn node_name(i: usize) -> String {
    format!("ringmq@n{}", i + 1)
}

/// A hub namespace holding a bridge, and one namespace per node with a veth pair to it; all
/// deleted on drop (the nodes' first, then the hub).
pub struct Namespaces {
    pub nodes: Vec<Namespace>,
    pub hub: Namespace,
    /// Keeps interface names apart between parallel runs.
    tag: String,
    layout: Layout,
}

impl Namespaces {
    pub fn create(layout: Layout) -> Namespaces {
        Namespaces::create_sized(layout, NODES)
    }

    /// As [`Namespaces::create`], with `count` node namespaces (a node to join later).
    pub fn create_sized(layout: Layout, count: usize) -> Namespaces {
        let tag = netns::run_tag();
        let prefix = layout.namespace_prefix;
        let hub = Namespace::create(format!("{prefix}-h-{tag}"));
        hub.ip_ok(&["link", "add", "br0", "type", "bridge"]);
        hub.ip_ok(&["link", "set", "br0", "up"]);
        let nodes = (0..count)
            .map(|i| Namespace::create(format!("{prefix}-n{i}-{tag}")))
            .collect();
        let namespaces = Namespaces {
            nodes,
            hub,
            tag,
            layout,
        };
        for (i, node) in namespaces.nodes.iter().enumerate() {
            let inner = namespaces.inner_link(i);
            let outer = format!("{}{i}b{}", layout.link_prefix, namespaces.tag);
            netns::veth(node, &inner, &namespaces.hub, &outer);
            namespaces
                .hub
                .ip_ok(&["link", "set", &outer, "master", "br0"]);
            namespaces.hub.ip_ok(&["link", "set", &outer, "up"]);
            node.address(&inner, &format!("{}/{PREFIX_LENGTH}", layout.address(i)));
        }
        namespaces
    }

    /// Node `i`'s end of its veth pair (inside its namespace): its only way to the others.
    pub fn inner_link(&self, i: usize) -> String {
        format!("{}{i}a{}", self.layout.link_prefix, self.tag)
    }

    /// Cuts (`up == false`) or restores node `i`'s link to the bridge, inside its namespace.
    pub fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        let link = self.inner_link(i);
        self.nodes[i].ip_ok(&["link", "set", &link, state]);
    }
}

pub struct Cluster {
    // Dropped first: the brokers stop before their namespaces go.
    pub brokers: Vec<Broker>,
    pub namespaces: Namespaces,
    pub layout: Layout,
}

impl Cluster {
    pub fn start(layout: Layout) -> Cluster {
        Cluster::start_with_args(layout, &[])
    }

    /// As [`Cluster::start`], every node also given `extra` flags (kept across restarts).
    pub fn start_with_args(layout: Layout, extra: &[&str]) -> Cluster {
        let namespaces = Namespaces::create(layout);
        let brokers = (0..NODES)
            .map(|i| {
                let launcher = namespaces.nodes[i].launcher();
                let mut args = layout.node_args(i, SECRET);
                args.extend(extra.iter().map(|a| a.to_string()));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Broker::start_with_launcher(1, &launcher, &args)
            })
            .collect();
        Cluster {
            brokers,
            namespaces,
            layout,
        }
    }

    /// An HTTP request to node `i`'s management API as guest: (status, body).
    pub fn http(&self, i: usize, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let url = format!(
            "http://127.0.0.1:{}{path}",
            self.brokers[i].management_port()
        );
        curl(
            &self.namespaces.nodes[i],
            Some("guest:guest"),
            method,
            &url,
            body,
        )
    }

    /// `ringmqctl ARGS` against node `i`, from its namespace; its stdout.
    pub fn ctl(&self, i: usize, args: &[&str]) -> String {
        let port = self.brokers[i].management_port();
        self.namespaces.nodes[i].ringmqctl(port, args)
    }

    /// As [`Cluster::ctl`], whatever its exit code.
    pub fn ctl_output(&self, i: usize, args: &[&str]) -> super::ctl::CtlOutput {
        let port = self.brokers[i].management_port();
        self.namespaces.nodes[i].ringmqctl_output(port, args)
    }

    /// Waits until node `i`'s `/api/nodes` shows `running` members running and the others not
    /// (a dead or cut-off peer is noticed within the link's silence bound).
    pub fn wait_running(&self, i: usize, running: usize) {
        let what = format!("node {} showing {running} of {NODES} running", i + 1);
        eventually(&what, CONVERGE_TIMEOUT, || {
            let (status, body) = self.http(i, "GET", "/api/nodes", None);
            status == 200
                && body.matches(r#""running":true"#).count() == running
                && body.matches(r#""running":false"#).count() == NODES - running
        });
    }
}

/// `curl` from inside `namespace`, with basic auth `user:password` when given: (status, body);
/// the request must complete.
pub fn curl(
    namespace: &Namespace,
    credentials: Option<&str>,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> (u16, String) {
    let answer = try_curl(namespace, credentials, method, url, body);
    answer.unwrap_or_else(|output| panic!("curl {method} {url}: {output}"))
}

/// As [`curl`]; a request that does not complete (nothing listening yet) is `Err` with what
/// curl said.
pub fn try_curl(
    namespace: &Namespace,
    credentials: Option<&str>,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let mut command = namespace.command("curl");
    command
        .arg("-s")
        .args(["-X", method, "-w", "\n%{http_code}"])
        .args(["-H", "content-type: application/json"])
        .args(["--max-time", CURL_MAX_TIME_SECONDS]);
    if let Some(credentials) = credentials {
        command.args(["-u", credentials]);
    }
    if let Some(body) = body {
        command.args(["--data", body]);
    }
    command.arg(url);
    let output = run_bounded(command, CTL_RUN_TIMEOUT);
    if output.code != Some(0) {
        return Err(format!("{output:?}"));
    }
    let (text, status) = output.stdout.rsplit_once('\n').unwrap_or(("", ""));
    Ok((status.trim().parse().unwrap_or(0), text.to_string()))
}

/// Polls `check` until it holds or `timeout` passes; returns how long it took.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < timeout,
            "not within {timeout:?}: {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    started.elapsed()
}
