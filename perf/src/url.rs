//! `amqp://user:pass@host:port/vhost`, with the vhost percent-decoded (`%2f` is "/"), and
//! `amqps://…?cacertfile=PATH`: TLS, the server's certificate checked against the CA in PATH
//! (RabbitMQ's URI query parameter; the only one read).

use ringmq::shovel::uri::PercentDecodeError;

use crate::error::{PerfError, Result};

pub const AMQP_PORT_DEFAULT: u16 = 5672;
pub const AMQPS_PORT_DEFAULT: u16 = 5671;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
    /// amqps: the CA file the server's certificate must chain to. None: plain TCP.
    pub tls_ca: Option<std::path::PathBuf>,
}

impl AmqpUrl {
    pub fn parse(text: &str) -> Result<AmqpUrl> {
        let (rest, tls) = match (text.strip_prefix("amqp://"), text.strip_prefix("amqps://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => {
                return Err(PerfError::Url(format!(
                    "{text}: scheme must be amqp:// or amqps://"
                )))
            }
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let tls_ca = match (tls, ca_file(query)?) {
            (true, Some(path)) => Some(path),
            (true, None) => {
                return Err(PerfError::Url(format!(
                    "{text}: amqps needs ?cacertfile=PATH (the CA to check the server against)"
                )))
            }
            (false, _) => None,
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (percent_decode(user)?, percent_decode(password)?),
                None => (percent_decode(info)?, String::new()),
            },
            None => ("guest".to_string(), "guest".to_string()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| PerfError::Url(format!("{text}: bad port {port:?}")))?;
                (host.to_string(), port)
            }
            None if tls => (hostport.to_string(), AMQPS_PORT_DEFAULT),
            None => (hostport.to_string(), AMQP_PORT_DEFAULT),
        };
        if host.is_empty() {
            return Err(PerfError::Url(format!("{text}: empty host")));
        }
        // RabbitMQ's convention: no path is the default vhost "/", an empty path is "".
        let vhost = match path {
            None => "/".to_string(),
            Some(path) => percent_decode(path)?,
        };
        Ok(AmqpUrl {
            user,
            password,
            host,
            port,
            vhost,
            tls_ca,
        })
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The `cacertfile` of a query string, percent-decoded.
fn ca_file(query: Option<&str>) -> Result<Option<std::path::PathBuf>> {
    for pair in query.unwrap_or("").split('&') {
        if let Some(value) = pair.strip_prefix("cacertfile=") {
            return Ok(Some(percent_decode(value)?.into()));
        }
    }
    Ok(None)
}

/// The shovel's strict decoding (a broken escape or non-UTF-8 is refused), with our messages.
pub fn percent_decode(text: &str) -> Result<String> {
    ringmq::shovel::uri::percent_decode(text).map_err(|error| {
        PerfError::Url(match error {
            PercentDecodeError::BadEscape => format!("bad percent escape in {text:?}"),
            PercentDecodeError::NotUtf8 => format!("{text:?} is not UTF-8"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let url = AmqpUrl::parse("amqp://guest:guest@127.0.0.1:5680/%2f").unwrap();
        assert_eq!(url.user, "guest");
        assert_eq!(url.password, "guest");
        assert_eq!(url.address(), "127.0.0.1:5680");
        assert_eq!(url.vhost, "/");
    }

    #[test]
    fn defaults() {
        let url = AmqpUrl::parse("amqp://localhost").unwrap();
        assert_eq!(url.port, AMQP_PORT_DEFAULT);
        assert_eq!(url.vhost, "/");
        assert_eq!(url.user, "guest");
        let url = AmqpUrl::parse("amqp://u:p%40ss@h:1/vh").unwrap();
        assert_eq!(url.password, "p@ss");
        assert_eq!(url.vhost, "vh");
    }

    #[test]
    fn amqps_with_a_ca_file() {
        let url = AmqpUrl::parse("amqps://u:p@127.0.0.1/%2f?cacertfile=%2ftmp%2fca.pem").unwrap();
        assert_eq!(url.port, AMQPS_PORT_DEFAULT);
        assert_eq!(url.vhost, "/");
        assert_eq!(
            url.tls_ca.as_deref(),
            Some(std::path::Path::new("/tmp/ca.pem"))
        );
        assert!(
            AmqpUrl::parse("amqps://h:5671/").is_err(),
            "no CA to check against"
        );
        assert_eq!(AmqpUrl::parse("amqp://h/?x=1").unwrap().tls_ca, None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(AmqpUrl::parse("http://x").is_err());
        assert!(AmqpUrl::parse("amqp://h:notaport/").is_err());
        assert!(AmqpUrl::parse("amqp://h/%zz").is_err());
        assert!(AmqpUrl::parse("amqp://h/%2").is_err());
        assert!(AmqpUrl::parse("amqp://:1/").is_err());
    }
}
