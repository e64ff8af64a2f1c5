//! The management API of the real broker, black-box, 1 and 2 shards (issue 10): HTTP
//! authentication and tags as RabbitMQ 3.10.8 answers them, operator changes that survive a
//! kill -9 once they were answered, and connections listed and closed by name. Against RabbitMQ:
//! `RINGMQ_TEST_EXTERNAL_PORT=5682 RINGMQ_TEST_EXTERNAL_MANAGEMENT_PORT=15682 cargo test
//! --release --test it management_api::` (the restart case needs a broker it started).

use crate::common;

use std::time::{Duration, Instant};

use common::admin::{encode, Admin};
use common::amqp::{channel, closing_error, connect_url, reply_code};
use common::{unique, Broker, SHARD_COUNTS};

const CLOSE_WAIT: Duration = Duration::from_secs(10);

per_shard_count!(
    wrong_passwords_and_missing_tags_get_401,
    connections_are_listed_with_their_user_and_closed_by_name,
);

async fn wrong_passwords_and_missing_tags_get_401(broker: &Broker) {
    let wrong = Admin::new(broker.management_port(), "guest", "not-the-password");
    let (status, _) = wrong.request("GET", "/overview", None);
    assert_eq!(status, 401, "a wrong password");

    let admin = Admin::for_broker(broker);
    let user = unique("untagged");
    admin.put_user(&user, "pw", "");
    let untagged = Admin::new(broker.management_port(), &user, "pw");
    let (status, body) = untagged.request("GET", "/overview", None);
    assert_eq!(status, 401, "a user without a management tag: {body}");
    assert!(body.contains("Not management user"), "{body}");

    let monitor = unique("monitor");
    admin.put_user(&monitor, "pw", "monitoring");
    let monitoring = Admin::new(broker.management_port(), &monitor, "pw");
    let (status, _) = monitoring.request("GET", "/overview", None);
    assert_eq!(status, 200, "monitoring may read the overview");
    let (status, _) = monitoring.request("PUT", &format!("/vhosts/{}", unique("v")), None);
    assert_eq!(status, 401, "monitoring may not create vhosts");

    admin.delete_user(&user);
    admin.delete_user(&monitor);
}

async fn connections_are_listed_with_their_user_and_closed_by_name(broker: &Broker) {
    // A vhost of its own tells our connection from any other on an external broker.
    let admin = Admin::for_broker(broker);
    let vhost = unique("listed");
    admin.put_vhost(&vhost);
    admin.set_permissions(&vhost, "guest", ".*", ".*", ".*");
    let url = format!(
        "amqp://guest:guest@127.0.0.1:{}/{}",
        broker.port(),
        encode(&vhost)
    );
    let conn = connect_url(&url).await;
    let ch = channel(&conn).await;
    let closed_rx = closing_error(&conn);
    let ours = our_listed_connection(&admin, &vhost);
    assert_eq!(ours["user"], "guest");
    let name = ours["name"].as_str().expect("a name").to_string();
    assert!(name.contains(" -> "), "RabbitMQ's name format: {name}");

    let (status, body) = admin.request("DELETE", &format!("/connections/{}", encode(&name)), None);
    assert!((200..300).contains(&status), "DELETE: {status} {body}");
    let error = tokio::time::timeout(CLOSE_WAIT, closed_rx)
        .await
        .expect("closed within the wait")
        .expect("an error is reported");
    assert_eq!(reply_code(&error), Some(320), "{error:?}");
    let lapin::Error::ProtocolError(protocol) = &error else {
        unreachable!("reply_code was Some")
    };
    assert_eq!(
        protocol.get_message().as_str(),
        "CONNECTION_FORCED - Closed via management plugin"
    );
    drop(ch);

    // An operator's reason in X-Reason is the client's close text (rabbitmqadmin and the UI
    // send one).
    let conn = connect_url(&url).await;
    let ch = channel(&conn).await;
    let closed_rx = closing_error(&conn);
    let ours = our_listed_connection(&admin, &vhost);
    let name = ours["name"].as_str().expect("a name").to_string();
    let (status, body) = admin.request_with_headers(
        "DELETE",
        &format!("/connections/{}", encode(&name)),
        None,
        &[("X-Reason", "maintenance window")],
    );
    assert!((200..300).contains(&status), "DELETE: {status} {body}");
    let error = tokio::time::timeout(CLOSE_WAIT, closed_rx)
        .await
        .expect("closed within the wait")
        .expect("an error is reported");
    let lapin::Error::ProtocolError(protocol) = &error else {
        panic!("a protocol error: {error:?}")
    };
    assert_eq!(
        protocol.get_message().as_str(),
        "CONNECTION_FORCED - maintenance window"
    );
    drop(ch);
    admin.delete_vhost(&vhost);
}

/// The API's entry for our connection in `vhost`, once it shows with its channel (RabbitMQ's
/// statistics lag by up to its collection interval; ringmq's are gathered when asked).
fn our_listed_connection(admin: &Admin, vhost: &str) -> serde_json::Value {
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        let (status, body) = admin.request("GET", "/connections", None);
        // RabbitMQ answers 500 now and then while another connection is going away.
        if status == 500 && Instant::now() < deadline {
            continue;
        }
        assert_eq!(status, 200, "{body}");
        let listed: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
        if let Some(ours) = listed
            .iter()
            .find(|c| c["vhost"] == vhost && c["channels"].as_u64() == Some(1))
        {
            return ours.clone();
        }
        assert!(
            Instant::now() < deadline,
            "our connection with its channel is listed: {listed:?}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn operator_changes_survive_kill_9_once_answered() {
    for shards in SHARD_COUNTS {
        let mut broker = Broker::start(shards);
        if broker.is_external() {
            return;
        }
        let admin = Admin::for_broker(&broker);
        let vhost = unique("kept-vhost");
        let user = unique("kept-user");
        admin.put_vhost(&vhost);
        admin.put_user(&user, "kept-pw", "management");
        admin.set_permissions(&vhost, &user, "^kept", ".*", ".*");
        broker.kill9();
        broker.restart_same_dir();

        let admin = Admin::for_broker(&broker);
        let (status, body) = admin.request(
            "GET",
            &format!("/permissions/{}/{}", encode(&vhost), encode(&user)),
            None,
        );
        assert_eq!(
            status, 200,
            "{shards} shards: the permission is back: {body}"
        );
        let permission: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(permission["configure"], "^kept");
        let as_user = Admin::new(broker.management_port(), &user, "kept-pw");
        let (status, _) = as_user.request("GET", "/overview", None);
        assert_eq!(
            status, 200,
            "{shards} shards: the user logs in with its password"
        );
    }
}
