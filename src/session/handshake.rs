//! The opening handshake: protocol header, start/start-ok (SASL PLAIN or AMQPLAIN, and EXTERNAL
//! over TLS with a verified client certificate), tune/tune-ok, open/open-ok. Failures are
//! answered the way RabbitMQ answers them.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};

use super::channel::access::Permissions;
use super::io::{FrameReader, ReadError};
use super::state::ConnShared;
use super::{heartbeat_timeout, Session};
use crate::config::ConnectionLimits;
use crate::limits::{CLOSE_TIMEOUT, TUNE_CHANNEL_MAX_MIN};
use crate::protocol::{
    reply_code, ConnectionClose, ConnectionOpen, ConnectionOpenOk, ConnectionStart,
    ConnectionStartOk, ConnectionTune, FieldTable, FieldValue, Frame, Method, FRAME_MIN_SIZE,
    PROTOCOL_HEADER,
};
use crate::shard::Shard;

/// Runs the handshake; `None` when the connection ended during it (the reason is already sent).
pub async fn run(
    shard: &Rc<Shard>,
    conn: &Rc<ConnShared>,
    mut reader: FrameReader,
    peer: Peer,
    heartbeat: Rc<Cell<u16>>,
    limits: ConnectionLimits,
) -> Option<Session> {
    let negotiated = glommio::timer::timeout(limits.handshake_timeout, async {
        Ok(negotiate(shard, conn, &mut reader, &peer, &limits).await)
    })
    .await
    .ok()??;
    let (user, vhost, channel_max, frame_max, heartbeat_seconds) = negotiated;
    heartbeat.set(heartbeat_seconds);
    reader.frame_max = frame_max;
    conn.frame_max.set(frame_max);
    Some(Session {
        shard: shard.clone(),
        conn: conn.clone(),
        reader,
        user,
        vhost,
        channel_max,
        heartbeat,
        authorizer: Rc::new(Permissions::default()),
        publish_blocked: false,
        limits,
    })
}

type Negotiated = (String, String, u16, u32, u16);

/// Who is on the other end, as far as the transport knows.
pub struct Peer {
    pub address: Option<SocketAddr>,
    /// The CN of the client certificate TLS verified (`net::ClientStream`): the user SASL
    /// EXTERNAL logs in as. `None` on plain TCP, or without a verified certificate.
    pub certificate_name: Option<String>,
}

async fn negotiate(
    shard: &Rc<Shard>,
    conn: &Rc<ConnShared>,
    reader: &mut FrameReader,
    peer: &Peer,
    limits: &ConnectionLimits,
) -> Option<Negotiated> {
    let header = reader.read_exact(PROTOCOL_HEADER.len()).await.ok()?;
    if header[..] != PROTOCOL_HEADER[..] {
        // The spec: answer a header we do not speak with the one we do, then close.
        let mut out = BytesMut::new();
        out.put_slice(PROTOCOL_HEADER);
        conn.send_raw(&out);
        return None;
    }
    let external = peer.certificate_name.is_some();
    conn.send_method(
        0,
        &Method::ConnectionStart(start_method(shard.id(), external)),
    );

    let start_ok = match expect_method(reader).await? {
        Method::ConnectionStartOk(m) => m,
        other => return fail(conn, reader, unexpected(&other, "connection.start-ok")).await,
    };
    if let Some(FieldValue::FieldTable(capabilities)) =
        start_ok.client_properties.get("capabilities")
    {
        let notify = capabilities
            .get("consumer_cancel_notify")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        conn.cancel_notify.set(notify);
        let blocked = capabilities
            .get("connection.blocked")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        conn.blocked_notify.set(blocked);
    }
    *conn.client_properties.borrow_mut() = start_ok.client_properties.clone();
    let user = match authenticate(shard, &start_ok.mechanism, &start_ok.response, peer) {
        Ok(user) => user,
        Err(text) => {
            return fail(
                conn,
                reader,
                (
                    reply_code::ACCESS_REFUSED,
                    text,
                    ConnectionStartOk::CLASS_ID,
                    ConnectionStartOk::METHOD_ID,
                ),
            )
            .await
        }
    };

    conn.send_method(
        0,
        &Method::ConnectionTune(ConnectionTune {
            channel_max: limits.channel_max,
            frame_max: limits.frame_max_bytes,
            heartbeat: limits.heartbeat_seconds,
        }),
    );
    let tune_ok = match expect_method(reader).await? {
        Method::ConnectionTuneOk(m) => m,
        other => return fail(conn, reader, unexpected(&other, "connection.tune-ok")).await,
    };
    let negotiation = check_negotiated(
        "frame_max",
        FRAME_MIN_SIZE,
        tune_ok.frame_max,
        limits.frame_max_bytes,
    )
    .and_then(|()| {
        check_negotiated(
            "channel_max",
            TUNE_CHANNEL_MAX_MIN,
            u32::from(tune_ok.channel_max),
            u32::from(limits.channel_max),
        )
    });
    if let Err(text) = negotiation {
        let at = (ConnectionTune::CLASS_ID, ConnectionTune::METHOD_ID);
        return fail(conn, reader, (reply_code::NOT_ALLOWED, text, at.0, at.1)).await;
    }
    let (channel_max, frame_max) = (tune_ok.channel_max, tune_ok.frame_max);

    let open = match expect_method(reader).await? {
        Method::ConnectionOpen(m) => m,
        other => return fail(conn, reader, unexpected(&other, "connection.open")).await,
    };
    let vhost = open.virtual_host;
    *conn.vhost_claim.borrow_mut() = Some(vhost.clone());
    let mut refusal = admit(shard, limits, &user, &vhost).await;
    if refusal.is_none() {
        // The topology borrow ends inside this block, before any await.
        let topology = shard.topology();
        if !topology.can_access_vhost(&user, &vhost) {
            refusal = Some(format!(
                "NOT_ALLOWED - access to vhost '{vhost}' refused for user '{user}'"
            ));
        }
    }
    if let Some(text) = refusal {
        *conn.vhost_claim.borrow_mut() = None;
        return fail(
            conn,
            reader,
            (
                reply_code::NOT_ALLOWED,
                text,
                ConnectionOpen::CLASS_ID,
                ConnectionOpen::METHOD_ID,
            ),
        )
        .await;
    }
    conn.send_method(0, &Method::ConnectionOpenOk(ConnectionOpenOk {}));
    if let Some(timeout) = heartbeat_timeout(tune_ok.heartbeat) {
        let _ = reader.set_read_timeout(Some(timeout));
    }
    Some((user, vhost, channel_max, frame_max, tune_ok.heartbeat))
}

/// RabbitMQ's `validate_negotiated_integer_value`: the client's tune-ok value must be at least
/// `min` (0 aside) and, when the server set a limit, neither 0 ("no limit") nor above it.
fn check_negotiated(field: &str, min: u32, client: u32, server: u32) -> Result<(), String> {
    let detail = if field == "channel_max" && client == 0 {
        " (no limit)"
    } else {
        ""
    };
    let refused = |comparison: &str, bound: &str, value: u32| {
        format!(
            "NOT_ALLOWED - negotiated {field} = {client}{detail} is {comparison} than the \
             {bound} allowed value ({value})"
        )
    };
    if client != 0 && client < min {
        return Err(refused("lower", "minimum", min));
    }
    if server != 0 && (client == 0 || client > server) {
        return Err(refused("higher", "maximum", server));
    }
    Ok(())
}

/// The checks RabbitMQ makes at connection.open before vhost access, in its order: the
/// node's `connection_max`, the vhost's existence, the vhost's `max-connections`. Connections
/// are counted on every shard only when a limit is set (`shard::admission`).
async fn admit(
    shard: &Rc<Shard>,
    limits: &ConnectionLimits,
    user: &str,
    vhost: &str,
) -> Option<String> {
    if let Some(connection_max) = limits.connection_max {
        // Like ranch's active connections, the count includes this one.
        if shard.connection_count_everywhere(None).await > connection_max {
            return Some(format!(
                "NOT_ALLOWED - connection refused: node connection limit ({connection_max}) is reached"
            ));
        }
    }
    let vhost_limit = {
        let topology = shard.topology();
        if !topology.vhost_exists(vhost) {
            return Some(format!("NOT_ALLOWED - vhost {vhost} not found"));
        }
        topology.vhost_limits(vhost).connection_limit()
    };
    let limit = vhost_limit?;
    // The count includes this connection (it claimed the vhost), so the limit is reached when
    // the others already fill it; a limit of 0 refuses every connection, as RabbitMQ's.
    if limit == 0 || shard.connection_count_everywhere(Some(vhost)).await > limit {
        return Some(format!(
            "NOT_ALLOWED - access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"
        ));
    }
    None
}

fn start_method(shard: usize, external: bool) -> ConnectionStart {
    let mut capabilities = FieldTable::default();
    for name in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        capabilities.insert(name, FieldValue::Boolean(true));
    }
    let text = |s: &str| FieldValue::LongString(Bytes::copy_from_slice(s.as_bytes()));
    let mut properties = FieldTable::default();
    properties.insert("capabilities", FieldValue::FieldTable(capabilities));
    properties.insert("cluster_name", text("ringmq"));
    properties.insert("copyright", text("ringmq contributors"));
    properties.insert("information", text("Licensed under the Apache License 2.0"));
    properties.insert("platform", text("Rust / glommio"));
    properties.insert("product", text("ringmq"));
    properties.insert("version", text(env!("CARGO_PKG_VERSION")));
    // Which shard serves this connection: lets tests place publishers and consumers on purpose.
    properties.insert("ringmq_shard", text(&shard.to_string()));
    ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: properties,
        // EXTERNAL is offered only where it can succeed, as rabbit_auth_mechanism_ssl's
        // should_offer (a peer certificate); first, as RabbitMQ's docs configure it.
        mechanisms: if external {
            Bytes::from_static(b"EXTERNAL PLAIN AMQPLAIN")
        } else {
            Bytes::from_static(b"PLAIN AMQPLAIN")
        },
        locales: Bytes::from_static(b"en_US"),
    }
}

/// Checks the SASL response; returns the user name, or RabbitMQ's refusal text.
fn authenticate(
    shard: &Shard,
    mechanism: &str,
    response: &[u8],
    peer: &Peer,
) -> Result<String, String> {
    let credentials = match mechanism {
        "PLAIN" => parse_plain(response),
        "AMQPLAIN" => parse_amqplain(response),
        "EXTERNAL" if peer.certificate_name.is_some() => {
            return authenticate_external(shard, peer);
        }
        other => {
            return Err(format!(
                "ACCESS_REFUSED - unsupported authentication mechanism '{other}'"
            ))
        }
    };
    let refused = || {
        format!(
            "ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}. \
             For details see the broker logfile."
        )
    };
    let Some((name, password)) = credentials else {
        return Err(refused());
    };
    let topology = shard.topology();
    let Some(user) = topology.user(&name) else {
        tracing::info!(user = %name, "login refused: no such user");
        return Err(refused());
    };
    if !user.password_hash.verify(&password) {
        tracing::info!(user = %name, "login refused: wrong password");
        return Err(refused());
    }
    check_loopback(&name, peer)?;
    Ok(name)
}

/// EXTERNAL: the certificate vouches for the user, who must exist; the response is ignored,
/// as rabbit_auth_mechanism_ssl does. Loopback-only users stay loopback-only.
fn authenticate_external(shard: &Shard, peer: &Peer) -> Result<String, String> {
    let name = peer.certificate_name.clone().unwrap_or_default();
    let topology = shard.topology();
    if topology.user(&name).is_none() {
        tracing::info!(user = %name, "EXTERNAL login refused: no such user");
        return Err(
            "ACCESS_REFUSED - Login was refused using authentication mechanism \
                    EXTERNAL. For details see the broker logfile."
                .to_string(),
        );
    }
    check_loopback(&name, peer)?;
    Ok(name)
}

/// RabbitMQ's `loopback_users` (configuration, `shard::boot`).
fn check_loopback(name: &str, peer: &Peer) -> Result<(), String> {
    if crate::shard::boot::access_boot().refuses_remote_login(name, peer.address) {
        tracing::info!(user = %name, peer = ?peer.address, "login refused: user may only connect via localhost");
        return Err(format!(
            "ACCESS_REFUSED - user '{name}' can only connect via localhost"
        ));
    }
    Ok(())
}

/// PLAIN: `[authzid] NUL authcid NUL passwd`.
fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|&b| b == 0);
    let _authzid = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

/// AMQPLAIN: a field table without its length prefix, with LOGIN and PASSWORD.
fn parse_amqplain(response: &[u8]) -> Option<(String, String)> {
    let table = crate::protocol::decode_table_body(response).ok()?;
    let text = |key: &str| match table.get(key)? {
        FieldValue::LongString(s) => std::str::from_utf8(&s[..]).ok().map(str::to_string),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

async fn expect_method(reader: &mut FrameReader) -> Option<Method> {
    loop {
        match reader.next_frame().await {
            Ok(Frame::Method { channel: 0, method }) => return Some(method),
            Ok(Frame::Heartbeat { .. }) => continue,
            Ok(_) => return None,
            Err(ReadError::Protocol(_)) | Err(_) => return None,
        }
    }
}

fn unexpected(method: &Method, expected: &str) -> (u16, String, u16, u16) {
    (
        reply_code::COMMAND_INVALID,
        format!(
            "COMMAND_INVALID - expected '{expected}', got '{}'",
            method.name()
        ),
        method.class_id(),
        method.method_id(),
    )
}

/// Sends connection.close and waits (bounded) for close-ok.
async fn fail(
    conn: &ConnShared,
    reader: &mut FrameReader,
    (code, text, class_id, method_id): (u16, String, u16, u16),
) -> Option<Negotiated> {
    tracing::info!(conn = conn.id, code, %text, "handshake refused");
    conn.send_method(
        0,
        &Method::ConnectionClose(ConnectionClose {
            reply_code: code,
            reply_text: text,
            class_id,
            method_id,
        }),
    );
    let _ = glommio::timer::timeout(CLOSE_TIMEOUT, async {
        while let Some(method) = expect_method(reader).await {
            if matches!(method, Method::ConnectionCloseOk(_)) {
                break;
            }
        }
        Ok(())
    })
    .await;
    None
}
