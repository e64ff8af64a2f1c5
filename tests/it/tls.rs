//! amqps (issue 12): TLS on the TLS port with certificates this test makes with the `openssl`
//! CLI (a CA, a server certificate for 127.0.0.1, client certificates signed by the CA and one
//! self-signed). Black-box over loopback, 1 and 2 shards. lapin connects with its rustls
//! feature (lapin's default); the raw checks use rustls directly, blocking, to see the bytes.
//!
//! Not run against RabbitMQ: the 3.10.8 oracle here has no TLS listener (and must not be
//! reconfigured). What RabbitMQ does is cited at each test.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::amqp::{channel, declare_queue, get, publish, reply_code};
use common::{free_port, step, unique, Broker, SHARD_COUNTS, STEP_TIMEOUT};
use lapin::options::QueueDeclareOptions;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// How the broker asks for client certificates.
#[derive(Clone, Copy, PartialEq)]
enum Verify {
    None,
    /// verify_peer: a client may come without a certificate (then no EXTERNAL).
    Peer,
    /// verify_peer and fail_if_no_peer_cert.
    PeerRequired,
}

/// Certificates made for one test in a directory removed on drop.
struct Certs {
    dir: PathBuf,
}

const P12_PASSWORD: &str = "test";

impl Certs {
    fn generate() -> Certs {
        let dir = std::env::temp_dir().join(unique("ringmq-tls"));
        std::fs::create_dir_all(&dir).expect("create cert dir");
        let certs = Certs { dir };
        certs.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ringmq test CA",
            "-keyout",
            "ca_key.pem",
            "-out",
            "ca_certificate.pem",
        ]);
        certs.signed(
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        );
        // X.509 v3 (an extension file with extensions): webpki refuses v1 client certificates.
        let client = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth";
        certs.signed("client", "guest", client);
        certs.signed("stranger", "nobody-by-this-name", client);
        certs.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=guest",
            "-keyout",
            "selfsigned_key.pem",
            "-out",
            "selfsigned_certificate.pem",
        ]);
        certs
    }

    /// `NAME_key.pem`, `NAME_certificate.pem` (CN=`common_name`, signed by the CA) and
    /// `NAME.p12` (what lapin takes as a client identity).
    fn signed(&self, name: &str, common_name: &str, extensions: &str) {
        let key = format!("{name}_key.pem");
        let request = format!("{name}.csr");
        let certificate = format!("{name}_certificate.pem");
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={common_name}"),
            "-keyout",
            &key,
            "-out",
            &request,
        ]);
        let extension_file = format!("{name}.ext");
        std::fs::write(self.dir.join(&extension_file), extensions).expect("ext");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            "ca_certificate.pem",
            "-CAkey",
            "ca_key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extension_file,
            "-out",
            &certificate,
        ]);
        self.openssl(&[
            "pkcs12",
            "-export",
            "-inkey",
            &key,
            "-in",
            &certificate,
            "-passout",
            &format!("pass:{P12_PASSWORD}"),
            "-out",
            &format!("{name}.p12"),
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl (the test makes its certificates with the openssl CLI)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).expect("read generated file")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broker with amqps on a port of its own, and the management API over HTTPS on another.
struct TlsBroker {
    broker: Broker,
    tls_port: u16,
    https_port: u16,
}

fn start(shards: usize, certs: &Certs, verify: Verify) -> TlsBroker {
    let tls_port = free_port();
    let https_port = free_port();
    let text = |p: PathBuf| p.to_str().expect("utf-8 temp path").to_owned();
    let mut args = vec![
        "--tls-port".to_owned(),
        tls_port.to_string(),
        "--management-tls-port".to_owned(),
        https_port.to_string(),
        "--tls-cert".to_owned(),
        text(certs.path("server_certificate.pem")),
        "--tls-key".to_owned(),
        text(certs.path("server_key.pem")),
        "--tls-ca".to_owned(),
        text(certs.path("ca_certificate.pem")),
    ];
    if verify != Verify::None {
        args.push("--tls-verify-peer".to_owned());
    }
    if verify == Verify::PeerRequired {
        args.push("--tls-fail-if-no-peer-cert".to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TlsBroker {
        broker: Broker::start_with_args(shards, &args),
        tls_port,
        https_port,
    }
}

fn tls_config(certs: &Certs, identity: Option<&str>) -> OwnedTLSConfig {
    OwnedTLSConfig {
        identity: identity.map(|name| OwnedIdentity {
            der: certs.read(&format!("{name}.p12")),
            password: P12_PASSWORD.to_owned(),
        }),
        cert_chain: Some(String::from_utf8(certs.read("ca_certificate.pem")).expect("PEM is text")),
    }
}

async fn connect_tls(url: &str, config: OwnedTLSConfig) -> lapin::Result<Connection> {
    step(
        "connect over TLS",
        Connection::connect_with_config(url, ConnectionProperties::default(), config),
    )
    .await
}

/// Publishes to a fresh queue and reads the message back over `connection`.
async fn round_trip(connection: &Connection) {
    let ch = channel(connection).await;
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let queue = unique("tls-q");
    declare_queue(&ch, &queue, QueueDeclareOptions::default())
        .await
        .expect("queue.declare");
    let body = vec![7u8; 100_000];
    publish(&ch, "", &queue, &body, BasicProperties::default()).await;
    let message = get(&ch, &queue, true).await.expect("the message is there");
    assert_eq!(message.delivery.data, body);
}

#[tokio::test]
async fn lapin_over_tls_publishes_and_gets_with_plain_login() {
    let certs = Certs::generate();
    for shards in SHARD_COUNTS {
        let tls = start(shards, &certs, Verify::None);
        let url = format!("amqps://guest:guest@127.0.0.1:{}/%2f", tls.tls_port);
        let connection = connect_tls(&url, tls_config(&certs, None))
            .await
            .expect("TLS connection");
        round_trip(&connection).await;
        // The plain port still serves, and both see the same broker.
        let plain = common::amqp::connect(&tls.broker).await;
        round_trip(&plain).await;
        let _ = connection.close(200, "bye").await;
        let _ = plain.close(200, "bye").await;
    }
}

/// rabbit_auth_mechanism_ssl: EXTERNAL logs in as the certificate's CN (with
/// `ssl_cert_login_from = common_name`); the user must exist, no password is checked.
#[tokio::test]
async fn external_login_is_the_certificate_common_name() {
    let certs = Certs::generate();
    for shards in SHARD_COUNTS {
        let tls = start(shards, &certs, Verify::Peer);
        let url = format!(
            "amqps://127.0.0.1:{}/%2f?auth_mechanism=external",
            tls.tls_port
        );
        let connection = connect_tls(&url, tls_config(&certs, Some("client")))
            .await
            .expect("EXTERNAL login as guest (CN=guest)");
        round_trip(&connection).await;
        let _ = connection.close(200, "bye").await;

        let error = connect_tls(&url, tls_config(&certs, Some("stranger")))
            .await
            .expect_err("CN=nobody-by-this-name is no user");
        assert_refused(&error, &tls.broker);
    }
}

fn assert_refused(error: &lapin::Error, broker: &Broker) {
    // lapin reports a refused login as a protocol error (403) or as the socket closing after
    // the close it was sent, depending on timing; the broker's log says which user was refused.
    let refused = reply_code(error) == Some(403)
        || matches!(
            error,
            lapin::Error::IOError(_) | lapin::Error::InvalidConnectionState(_)
        );
    assert!(refused, "expected a refusal, got {error:?}");
    assert!(
        broker.log_text().contains("EXTERNAL login refused"),
        "log: {}",
        broker.log_text()
    );
}

/// RabbitMQ offers EXTERNAL only when the connection has a peer certificate
/// (`should_offer`); over TLS without one, or on the plain port, it is not offered.
#[tokio::test]
async fn external_is_offered_only_with_a_verified_client_certificate() {
    let certs = Certs::generate();
    for shards in SHARD_COUNTS {
        let tls = start(shards, &certs, Verify::Peer);
        let with_cert = raw_start_mechanisms(&certs, tls.tls_port, Some("client"));
        assert_eq!(with_cert, "EXTERNAL PLAIN AMQPLAIN");
        let without_cert = raw_start_mechanisms(&certs, tls.tls_port, None);
        assert_eq!(without_cert, "PLAIN AMQPLAIN");
        let plain = plain_start_mechanisms(tls.broker.port());
        assert_eq!(plain, "PLAIN AMQPLAIN");
    }
}

/// `fail_if_no_peer_cert`: the handshake fails for a client without a certificate, and for
/// one whose certificate no configured CA signed; a good certificate still gets in.
#[tokio::test]
async fn fail_if_no_peer_cert_refuses_clients_without_a_good_certificate() {
    let certs = Certs::generate();
    for shards in SHARD_COUNTS {
        let tls = start(shards, &certs, Verify::PeerRequired);
        let url = format!("amqps://guest:guest@127.0.0.1:{}/%2f", tls.tls_port);
        let error = connect_tls(&url, tls_config(&certs, None))
            .await
            .expect_err("no client certificate");
        assert!(reply_code(&error).is_none(), "refused in TLS: {error:?}");
        assert!(raw_tls_session(&certs, tls.tls_port, None).is_err());
        assert!(raw_tls_session(&certs, tls.tls_port, Some("selfsigned")).is_err());
        let connection = connect_tls(&url, tls_config(&certs, Some("client")))
            .await
            .expect("a signed certificate gets in");
        round_trip(&connection).await;
        let _ = connection.close(200, "bye").await;
    }
}

/// Plain AMQP, a malformed ClientHello or random bytes on the TLS port: that connection is
/// closed and nothing else is disturbed (an open TLS connection keeps working).
#[tokio::test]
async fn non_tls_bytes_on_the_tls_port_close_only_that_connection() {
    let certs = Certs::generate();
    for shards in SHARD_COUNTS {
        let tls = start(shards, &certs, Verify::None);
        let url = format!("amqps://guest:guest@127.0.0.1:{}/%2f", tls.tls_port);
        let open = connect_tls(&url, tls_config(&certs, None))
            .await
            .expect("TLS connection");
        let mut truncated_hello = vec![0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c];
        truncated_hello.extend([0xff; 20]);
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for bytes in [b"AMQP\x00\x00\x09\x01".to_vec(), truncated_hello, garbage] {
            assert_closed_after(tls.tls_port, &bytes);
        }
        round_trip(&open).await;
        let again = connect_tls(&url, tls_config(&certs, None))
            .await
            .expect("new TLS connections still accepted");
        round_trip(&again).await;
        let _ = open.close(200, "bye").await;
        let _ = again.close(200, "bye").await;
    }
}

/// A peer that connects to the TLS port and sends nothing is closed after the handshake
/// timeout (limits::TLS_HANDSHAKE_TIMEOUT, 10 s).
#[tokio::test]
async fn silent_peer_on_the_tls_port_is_closed_after_the_handshake_timeout() {
    let certs = Certs::generate();
    let tls = start(1, &certs, Verify::None);
    let mut socket = TcpStream::connect(("127.0.0.1", tls.tls_port)).expect("connect");
    let bound = Duration::from_secs(15);
    socket.set_read_timeout(Some(bound)).expect("timeout");
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let read = socket.read(&mut buffer);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0)) || matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected the broker to close, got {read:?} after {waited:?}"
    );
    assert!(
        waited >= Duration::from_secs(9),
        "closed too early: {waited:?}"
    );
}

/// Sends `bytes` to the TLS port and expects the broker to close: end of stream or reset,
/// within the step timeout. Whatever it sends first (a TLS alert) is not AMQP.
fn assert_closed_after(port: u16, bytes: &[u8]) {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    socket
        .set_read_timeout(Some(STEP_TIMEOUT))
        .expect("timeout");
    socket.write_all(bytes).expect("send");
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("after {bytes:02x?}: not closed: {e}"),
        }
        assert!(
            received.len() < 1024,
            "the broker kept talking: {received:02x?}"
        );
    }
    assert!(
        !received.starts_with(b"AMQP") && !received.starts_with(&[1, 0, 0]),
        "answered in AMQP: {received:02x?}"
    );
    assert!(
        !received.starts_with(b"HTTP"),
        "answered in HTTP: {received:02x?}"
    );
}

/// RabbitMQ's `management.ssl`: the API answers over HTTPS with the broker's certificate,
/// authenticates as over HTTP, asks no client certificate even where amqps requires one, and
/// a plain HTTP request on the HTTPS port gets no HTTP answer. Debian's rabbitmqadmin works
/// against it with `--ssl`.
#[test]
fn management_api_over_https() {
    let certs = Certs::generate();
    for shards in SHARD_COUNTS {
        let tls = start(shards, &certs, Verify::PeerRequired);
        let overview = https_request(&certs, tls.https_port, "/api/overview", Some("guest:guest"));
        assert!(overview.starts_with("HTTP/1.1 200"), "{overview}");
        assert!(overview.contains("\"rabbitmq_version\""), "{overview}");
        let refused = https_request(&certs, tls.https_port, "/api/overview", None);
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
        let wrong = https_request(&certs, tls.https_port, "/api/overview", Some("guest:nope"));
        assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
        assert_closed_after(
            tls.https_port,
            b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        );
        if std::path::Path::new("/usr/bin/rabbitmqadmin").exists() {
            let ca = certs.path("ca_certificate.pem");
            let output = Command::new("/usr/bin/rabbitmqadmin")
                .args(["--host", "127.0.0.1", "--port", &tls.https_port.to_string()])
                .args([
                    "--ssl",
                    "--ssl-ca-cert-file",
                    ca.to_str().expect("utf-8 path"),
                ])
                .args(["--username", "guest", "--password", "guest"])
                .args(["--format", "raw_json", "show", "overview"])
                .output()
                .expect("run rabbitmqadmin");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains("rabbitmq_version"),
                "rabbitmqadmin over HTTPS: {stdout} {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

#[test]
fn management_tls_port_needs_a_certificate() {
    let port = free_port().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--management-tls-port", &port])
        .output()
        .expect("run ringmq");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("management-tls-port needs"), "{stderr}");
}

/// One HTTP/1.1 request over TLS (trusting the test CA, no client certificate); the whole
/// response as text.
fn https_request(certs: &Certs, port: u16, path: &str, credentials: Option<&str>) -> String {
    use base64::Engine;
    let mut stream = tls_client(certs, port, None).expect("TLS handshake");
    let authorization = credentials.map_or(String::new(), |c| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(c);
        format!("Authorization: Basic {encoded}\r\n")
    });
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // A server closing without close_notify after `Connection: close`: the bytes are there.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("read HTTPS response: {e}"),
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// A blocking rustls client after the AMQP protocol header: the first 7 bytes of the answer
/// are read (TLS 1.3: a refused client certificate shows on the first read after the handshake).
fn raw_tls_session(
    certs: &Certs,
    port: u16,
    identity: Option<&str>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut stream = tls_client(certs, port, identity)?;
    stream.write_all(b"AMQP\x00\x00\x09\x01")?;
    let mut first = [0u8; 7];
    stream.read_exact(&mut first)?;
    Ok(stream)
}

/// A blocking rustls client: trusts the test CA, presents `identity` (a `NAME_*.pem` pair).
fn tls_client(
    certs: &Certs,
    port: u16,
    identity: Option<&str>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(certs.path("ca_certificate.pem")).expect("CA") {
        roots.add(ca.expect("CA PEM")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(certs.path(&format!("{name}_certificate.pem")))
                    .expect("cert")
                    .map(|c| c.expect("cert PEM"))
                    .collect();
            let key =
                PrivateKeyDer::from_pem_file(certs.path(&format!("{name}_key.pem"))).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
    };
    let name = ServerName::try_from("127.0.0.1").expect("IP server name");
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let socket = TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(STEP_TIMEOUT))?;
    Ok(rustls::StreamOwned::new(connection, socket))
}

/// connection.start's mechanisms over TLS (`raw_tls_session` read its frame header).
fn raw_start_mechanisms(certs: &Certs, port: u16, identity: Option<&str>) -> String {
    let mut stream = raw_tls_session(certs, port, identity).expect("TLS session");
    read_start_mechanisms(&mut stream)
}

fn plain_start_mechanisms(port: u16) -> String {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    socket
        .set_read_timeout(Some(STEP_TIMEOUT))
        .expect("timeout");
    socket.write_all(b"AMQP\x00\x00\x09\x01").expect("header");
    let mut header = [0u8; 7];
    socket.read_exact(&mut header).expect("frame header");
    read_start_mechanisms(&mut socket)
}

/// Reads connection.start after its frame header: class, method, version, server-properties
/// (a table), then mechanisms (a long string).
fn read_start_mechanisms(stream: &mut impl Read) -> String {
    let mut prefix = [0u8; 6];
    stream.read_exact(&mut prefix).expect("start prefix");
    assert_eq!(prefix[..4], [0, 10, 0, 10], "connection.start");
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("table length");
    let mut table = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut table).expect("server properties");
    stream.read_exact(&mut length).expect("mechanisms length");
    let mut mechanisms = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut mechanisms).expect("mechanisms");
    String::from_utf8(mechanisms).expect("mechanisms are text")
}
