//! Debian's `rabbitmqadmin` (RabbitMQ 3.10.8's script, unchanged) against the management API:
//! the acceptance client of issue 10. Each scenario runs against the in-memory backend and
//! against the real broker (1 and 2 shards), so the fake and the shards answer alike.

use crate::common;

use std::net::SocketAddr;
use std::process::Command;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use ringmq::management::api::Api;
use ringmq::management::backend::ConnectionStats;
use ringmq::management::fake::FakeBackend;
use ringmq::management::http::{serve, ServerOptions};
use ringmq::management::rates::SharedRates;
use serde_json::Value;

const RABBITMQADMIN: &str = "/usr/bin/rabbitmqadmin";
/// Each rabbitmqadmin run is one or two HTTP requests to a local server.
const COMMAND_TIMEOUT_SECONDS: &str = "30";
const CONNECTION_NAME: &str = "127.0.0.1:40000 -> 127.0.0.1:5672";

/// The server on its own glommio executor thread; stopped (and joined) on drop.
struct Server {
    address: SocketAddr,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let (address_sender, address_receiver) = mpsc::channel();
        let (stop_sender, stop_receiver) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            glommio::LocalExecutorBuilder::default()
                .spawn(move || async move {
                    let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    address_sender.send(listener.local_addr().unwrap()).unwrap();
                    let backend = Rc::new(FakeBackend::new());
                    backend.connections.borrow_mut().push(ConnectionStats {
                        name: CONNECTION_NAME.to_string(),
                        vhost: "/".to_string(),
                        user: "guest".to_string(),
                        peer_host: "127.0.0.1".to_string(),
                        peer_port: 40000,
                        host: "127.0.0.1".to_string(),
                        port: 5672,
                        channels: 1,
                        ..ConnectionStats::default()
                    });
                    let api = Rc::new(Api::new(Rc::new(backend), SharedRates::default()));
                    let stop = async move {
                        while stop_receiver.try_recv().is_err() {
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                    };
                    serve(listener, api, ServerOptions::default(), stop).await;
                })
                .unwrap()
                .join()
                .unwrap();
        });
        let address = address_receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("management server did not start");
        Server {
            address,
            stop: Some(stop_sender),
            thread: Some(thread),
        }
    }

    fn admin(&self) -> Admin {
        Admin {
            port: self.address.port(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// rabbitmqadmin pointed at one management port, as guest.
struct Admin {
    port: u16,
}

impl Admin {
    /// Runs rabbitmqadmin; returns stdout, panicking with its stderr if it failed.
    fn run(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.status(args);
        assert!(ok, "rabbitmqadmin {args:?} failed:\n{stdout}\n{stderr}");
        stdout
    }

    fn status(&self, args: &[&str]) -> (bool, String, String) {
        let port = self.port.to_string();
        let output = Command::new("timeout")
            .arg(COMMAND_TIMEOUT_SECONDS)
            .arg("python3")
            .arg(RABBITMQADMIN)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "-u",
                "guest",
                "-p",
                "guest",
            ])
            .args(args)
            .output()
            .expect("run rabbitmqadmin");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn list(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["-f", "raw_json", "list"];
        full.extend_from_slice(args);
        let text = self.run(&full);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

fn names(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i[key].as_str().map(str::to_string))
        .collect()
}

fn rabbitmqadmin_present() -> bool {
    if std::path::Path::new(RABBITMQADMIN).exists() {
        return true;
    }
    eprintln!("SKIPPED: {RABBITMQADMIN} is missing (Debian package rabbitmq-server provides it)");
    false
}

fn vhosts_users_permissions(server: &Admin) {
    server.run(&["declare", "vhost", "name=mgmt-t"]);
    assert!(names(&server.list(&["vhosts"]), "name").contains(&"mgmt-t".to_string()));
    server.run(&[
        "declare",
        "user",
        "name=mgmt-t",
        "password=pw",
        "tags=administrator",
    ]);
    let users = server.list(&["users"]);
    let user = users
        .iter()
        .find(|u| u["name"] == "mgmt-t")
        .expect("user listed");
    assert_eq!(user["tags"], serde_json::json!(["administrator"]));
    server.run(&[
        "declare",
        "permission",
        "vhost=mgmt-t",
        "user=mgmt-t",
        "configure=^c",
        "write=.*",
        "read=.*",
    ]);
    let permissions = server.list(&["permissions"]);
    assert!(permissions
        .iter()
        .any(|p| p["user"] == "mgmt-t" && p["vhost"] == "mgmt-t" && p["configure"] == "^c"));
    // The new user logs in with its password.
    let port = server.port.to_string();
    let whoami = Command::new("timeout")
        .args([
            COMMAND_TIMEOUT_SECONDS,
            "python3",
            RABBITMQADMIN,
            "--port",
            &port,
            "-u",
            "mgmt-t",
            "-p",
            "pw",
            "-f",
            "raw_json",
            "list",
            "vhosts",
        ])
        .output()
        .unwrap();
    assert!(
        whoami.status.success(),
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    server.run(&["delete", "permission", "vhost=mgmt-t", "user=mgmt-t"]);
    assert!(!server
        .list(&["permissions"])
        .iter()
        .any(|p| p["user"] == "mgmt-t"));
    server.run(&["delete", "user", "name=mgmt-t"]);
    assert!(!names(&server.list(&["users"]), "name").contains(&"mgmt-t".to_string()));
    server.run(&["delete", "vhost", "name=mgmt-t"]);
    assert!(!names(&server.list(&["vhosts"]), "name").contains(&"mgmt-t".to_string()));
    let (ok, _, stderr) = server.status(&["delete", "vhost", "name=mgmt-t"]);
    assert!(!ok && stderr.contains("Not found"), "{stderr}");
}

fn queues_exchanges_bindings_and_messages(server: &Admin) {
    server.run(&["declare", "vhost", "name=mgmt-v"]);
    let v = ["-V", "mgmt-v"];
    let with_vhost = |args: &[&str]| {
        let mut full: Vec<&str> = v.to_vec();
        full.extend_from_slice(args);
        full.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let run = |args: &[&str]| {
        let full = with_vhost(args);
        server.run(&full.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let list = |args: &[&str]| {
        let full = with_vhost(args);
        server.list(&full.iter().map(String::as_str).collect::<Vec<_>>())
    };
    run(&["declare", "exchange", "name=mgmt-x", "type=topic"]);
    run(&[
        "declare",
        "queue",
        "name=mgmt-q",
        "durable=true",
        r#"arguments={"x-max-length":10}"#,
    ]);
    run(&[
        "declare",
        "binding",
        "source=mgmt-x",
        "destination=mgmt-q",
        "routing_key=a.b",
    ]);
    let exchanges = list(&["exchanges"]);
    let exchange = exchanges
        .iter()
        .find(|x| x["name"] == "mgmt-x")
        .expect("exchange listed");
    assert_eq!(exchange["type"], "topic");
    let queues = list(&["queues"]);
    assert_eq!(names(&queues, "name"), vec!["mgmt-q"]);
    assert_eq!(queues[0]["arguments"]["x-max-length"], 10);
    let bindings = list(&["bindings"]);
    assert!(bindings.iter().any(|b| b["source"] == "mgmt-x"
        && b["destination"] == "mgmt-q"
        && b["routing_key"] == "a.b"));

    run(&[
        "publish",
        "exchange=mgmt-x",
        "routing_key=a.b",
        "payload=hello",
    ]);
    assert_eq!(list(&["queues"])[0]["messages"], 1);
    let got = run(&[
        "-f",
        "raw_json",
        "get",
        "queue=mgmt-q",
        "ackmode=ack_requeue_true",
    ]);
    let got: Value = serde_json::from_str(got.trim()).unwrap();
    assert_eq!(got[0]["payload"], "hello");
    assert_eq!(got[0]["routing_key"], "a.b");
    run(&["purge", "queue", "name=mgmt-q"]);
    assert_eq!(list(&["queues"])[0]["messages"], 0);

    // Export, delete, import: the objects come back.
    // Named per call: both tests of this file run it, side by side in one process.
    let file = std::env::temp_dir().join(format!("{}.json", common::unique("ringmq-mgmt-defs")));
    let file_name = file.to_str().unwrap();
    server.run(&["export", file_name]);
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(exported["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "mgmt-q"));
    run(&[
        "delete",
        "binding",
        "source=mgmt-x",
        "destination_type=queue",
        "destination=mgmt-q",
        "properties_key=a.b",
    ]);
    assert!(!list(&["bindings"]).iter().any(|b| b["source"] == "mgmt-x"));
    run(&["delete", "queue", "name=mgmt-q"]);
    run(&["delete", "exchange", "name=mgmt-x"]);
    assert!(list(&["queues"]).is_empty());
    server.run(&["import", file_name]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(names(&list(&["queues"]), "name"), vec!["mgmt-q"]);
    assert!(list(&["bindings"])
        .iter()
        .any(|b| b["source"] == "mgmt-x" && b["routing_key"] == "a.b"));

    server.run(&["delete", "vhost", "name=mgmt-v"]);
    server.run(&["show", "overview"]);
}

fn policies(server: &Admin) {
    server.run(&[
        "declare",
        "policy",
        "name=mgmt-pol",
        "pattern=^mgmt-pol-",
        r#"definition={"max-length": 5, "message-ttl": 60000}"#,
        "priority=3",
        "apply-to=queues",
    ]);
    let listed = server.list(&["policies"]);
    let ours: Vec<&Value> = listed.iter().filter(|p| p["name"] == "mgmt-pol").collect();
    assert_eq!(ours.len(), 1, "{listed:?}");
    assert_eq!(ours[0]["definition"]["max-length"], 5);
    assert_eq!(ours[0]["priority"], 3);
    assert_eq!(ours[0]["apply-to"], "queues");
    server.run(&["delete", "policy", "name=mgmt-pol"]);
    let listed = server.list(&["policies"]);
    assert!(!names(&listed, "name").contains(&"mgmt-pol".to_string()));
}

fn fake_connection_closed(server: &Admin) {
    let connections = server.list(&["connections"]);
    assert_eq!(names(&connections, "name"), vec![CONNECTION_NAME]);
    server.run(&["close", "connection", &format!("name={CONNECTION_NAME}")]);
    assert!(server.list(&["connections"]).is_empty());
}

#[test]
fn rabbitmqadmin_manages_vhosts_users_permissions() {
    if !rabbitmqadmin_present() {
        return;
    }
    let server = Server::start();
    vhosts_users_permissions(&server.admin());
    policies(&server.admin());
}

#[test]
fn rabbitmqadmin_manages_queues_exchanges_bindings_and_messages() {
    if !rabbitmqadmin_present() {
        return;
    }
    let server = Server::start();
    queues_exchanges_bindings_and_messages(&server.admin());
    // Connections: listed, then closed.
    fake_connection_closed(&server.admin());
}

#[test]
fn rabbitmqadmin_against_the_broker() {
    if !rabbitmqadmin_present() {
        return;
    }
    for shards in common::SHARD_COUNTS {
        let broker = common::Broker::start(shards);
        let admin = Admin {
            port: broker.management_port(),
        };
        vhosts_users_permissions(&admin);
        queues_exchanges_bindings_and_messages(&admin);
        policies(&admin);
    }
}
