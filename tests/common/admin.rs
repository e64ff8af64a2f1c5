//! The management HTTP API as an operator drives it (users, vhosts, permissions), for tests
//! that need more than guest. Blocking calls with a timeout each: they are short and a test
//! awaits nothing meanwhile.

use std::time::Duration;

use super::Broker;

/// Bound of one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Admin {
    base: String,
    agent: ureq::Agent,
    authorization: String,
}

/// A vhost or name as one URL path segment (`/` is `%2F`), as RabbitMQ's API expects.
pub fn encode(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Admin {
    pub fn for_broker(broker: &Broker) -> Admin {
        Admin::new(broker.management_port(), "guest", "guest")
    }

    pub fn new(port: u16, user: &str, password: &str) -> Admin {
        let agent = ureq::AgentBuilder::new().timeout(REQUEST_TIMEOUT).build();
        let credentials = base64_encode(format!("{user}:{password}").as_bytes());
        Admin {
            base: format!("http://127.0.0.1:{port}/api"),
            agent,
            authorization: format!("Basic {credentials}"),
        }
    }

    /// Sends a request; returns the status and body whatever the status.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.request_with_headers(method, path, body, &[])
    }

    /// [`Admin::request`] with more headers (`X-Reason` on a connection's DELETE, say).
    pub fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("authorization", &self.authorization)
            .set("content-type", "application/json");
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = match body {
            Some(body) => request.send_string(body),
            None => request.call(),
        };
        match result {
            Ok(response) => (
                response.status(),
                response.into_string().unwrap_or_default(),
            ),
            Err(ureq::Error::Status(status, response)) => {
                (status, response.into_string().unwrap_or_default())
            }
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    /// The status of a bodiless request, or None when nothing answers (for readiness polls).
    pub fn try_request(&self, method: &str, path: &str) -> Option<u16> {
        let request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("authorization", &self.authorization);
        match request.call() {
            Ok(response) => Some(response.status()),
            Err(ureq::Error::Status(status, _)) => Some(status),
            Err(_) => None,
        }
    }

    /// GET `path`, which must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, text) = self.request("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    fn expect_success(&self, method: &str, path: &str, body: Option<&str>) {
        let (status, text) = self.request(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
    }

    pub fn put_vhost(&self, vhost: &str) {
        self.expect_success("PUT", &format!("/vhosts/{}", encode(vhost)), None);
    }

    /// Best effort: used in cleanup.
    pub fn delete_vhost(&self, vhost: &str) {
        self.request("DELETE", &format!("/vhosts/{}", encode(vhost)), None);
    }

    pub fn put_user(&self, user: &str, password: &str, tags: &str) {
        let body = serde_json::json!({ "password": password, "tags": tags }).to_string();
        self.expect_success("PUT", &format!("/users/{}", encode(user)), Some(&body));
    }

    /// Best effort: used in cleanup.
    pub fn delete_user(&self, user: &str) {
        self.request("DELETE", &format!("/users/{}", encode(user)), None);
    }

    pub fn set_permissions(
        &self,
        vhost: &str,
        user: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) {
        let body =
            serde_json::json!({ "configure": configure, "write": write, "read": read }).to_string();
        let path = format!("/permissions/{}/{}", encode(vhost), encode(user));
        self.expect_success("PUT", &path, Some(&body));
    }

    pub fn set_topic_permissions(
        &self,
        vhost: &str,
        user: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) {
        let body =
            serde_json::json!({ "exchange": exchange, "write": write, "read": read }).to_string();
        let path = format!("/topic-permissions/{}/{}", encode(vhost), encode(user));
        self.expect_success("PUT", &path, Some(&body));
    }
}

fn base64_encode(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}
