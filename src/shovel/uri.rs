//! `amqp://user:pass@host:port/vhost` as RabbitMQ's `amqp_uri` reads it: user, password and
//! vhost percent-decoded, `guest`/`guest` and port 5672 by default, no path means vhost `/`
//! and an empty path the empty vhost; query parameters (heartbeat, ...) are accepted and
//! ignored. `amqp://` with no host is the broker the shovel runs in (RabbitMQ's direct
//! connection), reached over its own AMQP listener.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AmqpUri {
    /// None: the local broker.
    pub host: Option<String>,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriError {
    /// Not `amqp` (amqps is not implemented by the shovel).
    Scheme(String),
    Malformed(String),
}

const AMQP_PORT: u16 = 5672;

impl AmqpUri {
    pub fn parse(text: &str) -> Result<AmqpUri, UriError> {
        let scheme = text.split_once("://").map_or(text, |(scheme, _)| scheme);
        if scheme != "amqp" {
            return Err(UriError::Scheme(scheme.to_string()));
        }
        let url = url::Url::parse(text).map_err(|e| UriError::Malformed(format!("{e:?}")))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string());
        let user = match url.username() {
            "" => "guest".to_string(),
            name => decode(name)?,
        };
        let password = match url.password() {
            None => "guest".to_string(),
            Some(p) => decode(p)?,
        };
        let vhost = match url.path() {
            "" => "/".to_string(),
            path => decode(path.strip_prefix('/').unwrap_or(path))?,
        };
        if vhost.contains('/') && url.path().matches('/').count() > 1 {
            return Err(UriError::Malformed("path_segments".to_string()));
        }
        Ok(AmqpUri {
            host,
            port: url.port().unwrap_or(AMQP_PORT),
            user,
            password,
            vhost,
        })
    }
}

/// The URI with its user and password taken out, for status output.
pub fn without_credentials(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => text.to_string(),
    }
}

/// Why [`percent_decode`] refused a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PercentDecodeError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

/// Percent-decoding of one URI component (`%2f` → `/`), strict where the `percent-encoding`
/// crate is lenient: a broken escape or a non-UTF-8 result is refused, as RabbitMQ refuses
/// the URI. ringmq-perf reads its `--url` with it too.
pub fn percent_decode(text: &str) -> Result<String, PercentDecodeError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(PercentDecodeError::BadEscape)?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PercentDecodeError::NotUtf8)
}

/// [`percent_decode`] with RabbitMQ's reasons.
fn decode(text: &str) -> Result<String, UriError> {
    percent_decode(text).map_err(|error| {
        let reason = match error {
            PercentDecodeError::BadEscape => "bad_escape",
            PercentDecodeError::NotUtf8 => "not_utf8",
        };
        UriError::Malformed(reason.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_uri_forms() {
        let full = AmqpUri::parse("amqp://us%40r:p%3Ass@h.example:5673/v%2fx?heartbeat=5").unwrap();
        assert_eq!(full.host.as_deref(), Some("h.example"));
        assert_eq!(
            (full.port, &full.user[..], &full.password[..]),
            (5673, "us@r", "p:ss")
        );
        assert_eq!(full.vhost, "v/x");
        let plain = AmqpUri::parse("amqp://h").unwrap();
        assert_eq!(
            (plain.port, &plain.user[..], &plain.vhost[..]),
            (5672, "guest", "/")
        );
        assert_eq!(AmqpUri::parse("amqp://h/").unwrap().vhost, "");
        assert_eq!(AmqpUri::parse("amqp://").unwrap().host, None);
        assert_eq!(
            AmqpUri::parse("amqp://[::1]:5").unwrap().host.as_deref(),
            Some("::1")
        );
    }

    #[test]
    fn credentials_hidden() {
        assert_eq!(without_credentials("amqp://u:p@h:1/v"), "amqp://h:1/v");
        assert_eq!(without_credentials("amqp://h/v@x"), "amqp://h/v@x");
        assert_eq!(without_credentials("amqp://"), "amqp://");
    }

    #[test]
    fn refusals() {
        assert_eq!(
            AmqpUri::parse("foo://x"),
            Err(UriError::Scheme("foo".into()))
        );
        assert!(matches!(
            AmqpUri::parse("amqp://h:x"),
            Err(UriError::Malformed(_))
        ));
        assert!(matches!(
            AmqpUri::parse("amqp://h/%zz"),
            Err(UriError::Malformed(_))
        ));
        assert!(matches!(
            AmqpUri::parse("amqp://h/a/b"),
            Err(UriError::Malformed(_))
        ));
    }
}
