//! A private RabbitMQ 3.10.8 node (Debian's rabbitmq-server) for the tests that compare with
//! or move data from RabbitMQ: its own node name, ports, data and log directories, HOME and so
//! Erlang cookie, all in a temporary directory; stopped on drop. Another RabbitMQ on this
//! machine (the default node name) is never touched.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::admin::Admin;
use super::ctl::run_bounded;
use super::{free_port, unique};

/// RabbitMQ's scripts as Debian installs them. The ones in /usr/sbin switch to the rabbitmq
/// user and drop the environment this test sets; these are the scripts they wrap.
pub const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
pub const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// A RabbitMQ boot with the management plugin on a loaded 2-core machine.
const RABBITMQ_READY_TIMEOUT: Duration = Duration::from_secs(180);
const RABBITMQ_STOP_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A private RabbitMQ node; stopped (rabbitmqctl stop, then its process group killed) on drop.
pub struct RabbitMq {
    pub node: String,
    pub port: u16,
    pub management_port: u16,
    /// rabbitmq_prometheus's port, when that plugin is enabled.
    pub prometheus_port: u16,
    root: PathBuf,
    child: Option<Child>,
}

impl RabbitMq {
    /// Starts a node with the management plugin.
    pub fn start() -> RabbitMq {
        RabbitMq::start_with_plugins(&["rabbitmq_management"])
    }

    /// Starts a node with these plugins enabled.
    pub fn start_with_plugins(plugins: &[&str]) -> RabbitMq {
        let root = std::env::temp_dir().join(unique("ringmq-rabbitmq"));
        std::fs::create_dir_all(&root).expect("rabbitmq temp dir");
        let mut rabbit = RabbitMq {
            node: format!("{}@localhost", unique("ringmq-roundtrip")),
            port: free_port(),
            management_port: free_port(),
            prometheus_port: free_port(),
            root,
            child: None,
        };
        rabbit.write_files(plugins);
        let log = std::fs::File::create(rabbit.root.join("server.out")).expect("server log");
        let mut command = Command::new(RABBITMQ_SERVER);
        rabbit.environment(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            // Its own process group: the drop guard kills beam and its helpers together.
            .process_group(0)
            .spawn()
            .expect("spawn rabbitmq-server");
        rabbit.child = Some(child);
        rabbit.wait_ready();
        rabbit
    }

    fn write_files(&self, plugins: &[&str]) {
        let mut config = format!(
            "listeners.tcp.default = 127.0.0.1:{}\n\
             management.tcp.port = {}\n\
             management.tcp.ip = 127.0.0.1\n\
             loopback_users.guest = true\n",
            self.port, self.management_port
        );
        // The keys exist only with the plugin (an unknown key stops the boot).
        if plugins.contains(&"rabbitmq_prometheus") {
            config.push_str(&format!(
                "prometheus.tcp.port = {}\nprometheus.tcp.ip = 127.0.0.1\n",
                self.prometheus_port
            ));
        }
        std::fs::write(self.root.join("rabbitmq.conf"), config).expect("config");
        std::fs::write(
            self.root.join("enabled_plugins"),
            format!("[{}].\n", plugins.join(",")),
        )
        .expect("enabled_plugins");
        std::fs::write(self.root.join("rabbitmq-env.conf"), "").expect("env file");
    }

    /// Everything that makes this node private (and keeps /etc/rabbitmq and /var/lib out).
    fn environment(&self, command: &mut Command) {
        let root = &self.root;
        let path = |name: &str| root.join(name).to_string_lossy().into_owned();
        command
            .env("HOME", root)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_PID_FILE", path("rabbit.pid"))
            .current_dir(root);
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + RABBITMQ_READY_TIMEOUT;
        let admin = self.admin();
        loop {
            if admin
                .try_request("GET", "/overview")
                .is_some_and(|s| s == 200)
            {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "RabbitMQ {} not ready within {RABBITMQ_READY_TIMEOUT:?} (exit {exited:?}):\n{}",
                self.node,
                self.log_tail()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn admin(&self) -> Admin {
        Admin::new(self.management_port, "guest", "guest")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("server.out")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        let mut stop = Command::new(RABBITMQCTL);
        self.environment(&mut stop);
        stop.args(["-n", &self.node, "stop"]);
        let stopped = run_bounded(stop, RABBITMQ_STOP_TIMEOUT);
        if stopped.code != Some(0) {
            eprintln!("rabbitmqctl stop {}: {stopped:?}", self.node);
        }
        if let Some(mut child) = self.child.take() {
            if let Ok(group) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on the process group this test created (process_group(0)).
                unsafe {
                    libc::kill(-group, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- RabbitMQ {} log tail ---\n{}",
                self.node,
                self.log_tail()
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Whether Debian's rabbitmq-server is installed (`.ci/run` installs it).
pub fn rabbitmq_installed() -> bool {
    Path::new(RABBITMQ_SERVER).exists() && Path::new(RABBITMQCTL).exists()
}
