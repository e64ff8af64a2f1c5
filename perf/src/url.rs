//! `amqp://user:pass@host:port/vhost`, with the vhost percent-decoded (`%2f` is "/").

use ringmq::shovel::uri::PercentDecodeError;

use crate::error::{PerfError, Result};

pub const AMQP_PORT_DEFAULT: u16 = 5672;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
}

impl AmqpUrl {
    pub fn parse(text: &str) -> Result<AmqpUrl> {
        let rest = text
            .strip_prefix("amqp://")
            .ok_or_else(|| PerfError::Url(format!("{text}: scheme must be amqp://")))?;
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
        })
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The shovel's strict decoding (a broken escape or non-UTF-8 is refused), with our messages.
fn percent_decode(text: &str) -> Result<String> {
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
    fn rejects_garbage() {
        assert!(AmqpUrl::parse("http://x").is_err());
        assert!(AmqpUrl::parse("amqp://h:notaport/").is_err());
        assert!(AmqpUrl::parse("amqp://h/%zz").is_err());
        assert!(AmqpUrl::parse("amqp://h/%2").is_err());
        assert!(AmqpUrl::parse("amqp://:1/").is_err());
    }
}
