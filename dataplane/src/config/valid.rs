//! Validation: a [`Config`] as written becomes a [`ValidConfig`], with
//! every value that has a syntax of its own parsed into its type (listen
//! addresses, upstream URLs, static sources, API targets, notification
//! events and URLs). What runs the proxy takes these typed values, so
//! nothing downstream parses a string again or has to trust that it was
//! checked.

use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};
use url::Url;

use super::auth::Authenticator;
use super::upstream::{url_path, Upstream};
use super::{
    ApiKind, AuthType, Authentication, Config, ConfigError, ConfigErrors, Resource, ResourceType,
};

/// A config that passed validation, with its values parsed.
///
/// It reads as the [`Config`] it was made from (`Deref`), serialises as it,
/// and compares equal to it; the parsed values are its own fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig {
    config: Config,
    /// `listen`, parsed; `None` when empty with `tlslisten` set (HTTPS only).
    pub listen_address: Option<ListenAddress>,
    /// `tlslisten`, parsed; `None` when empty.
    pub tls_address: Option<ListenAddress>,
    /// `adminlisten`, parsed; `None` when empty.
    pub admin_address: Option<ListenAddress>,
    /// `resources`, parsed, in the same order.
    parsed: Vec<ParsedResource>,
    /// `notifications`, parsed, in the same order.
    pub callbacks: Vec<ValidNotification>,
}

/// One resource, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedResource {
    pub serves: Served,
    /// Who may see it; `None`: everyone.
    pub auth: Option<Authenticator>,
}

/// What one resource serves, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Served {
    /// A live stream from these upstreams, in configuration order.
    Stream { upstreams: Vec<Upstream> },
    /// A static document.
    Static(StaticSource),
    /// A built-in API.
    Api(ApiTarget),
}

/// Where a static resource's document comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum StaticSource {
    /// A local file (`file://`).
    File(PathBuf),
    /// A remote document (`http://`, `https://`).
    Remote(Url),
}

/// A built-in API and, for `check` and `control`, the serve path of the
/// stream it is about (known to exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTarget {
    Health,
    Statistics,
    Prometheus,
    Check { stream: String },
    Control { stream: String },
}

/// The events a notification can be sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationEvent {
    LimitHit,
    LimitMiss,
    Heartbeat,
}

impl NotificationEvent {
    /// Parses a notification's `event`.
    pub fn parse(event: &str) -> Result<NotificationEvent, String> {
        match event {
            "limit_hit" => Ok(NotificationEvent::LimitHit),
            "limit_miss" => Ok(NotificationEvent::LimitMiss),
            "heartbeat" => Ok(NotificationEvent::Heartbeat),
            other => Err(format!(
                "unknown event {other:?}, expected limit_hit, limit_miss or heartbeat"
            )),
        }
    }

    /// The name of the event, as configured and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationEvent::LimitHit => "limit_hit",
            NotificationEvent::LimitMiss => "limit_miss",
            NotificationEvent::Heartbeat => "heartbeat",
        }
    }
}

/// One notification, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidNotification {
    pub event: NotificationEvent,
    pub url: Url,
    /// The `Authorization` value to send (the first named user's), if any.
    pub authorization: Option<String>,
}

/// A listen address: host (empty = every interface) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    pub host: String,
    pub port: u16,
    /// As configured, for messages.
    text: String,
}

impl ListenAddress {
    /// Splits a listen address into host and port, resolving the service
    /// names that Go accepts for web servers.
    pub fn parse(listen: &str) -> Result<ListenAddress, String> {
        let (host, port) = listen
            .rsplit_once(':')
            .ok_or_else(|| format!("{listen:?} is not host:port"))?;
        let port = match port {
            "http" | "www" => 80,
            "https" => 443,
            "http-alt" | "webcache" => 8080,
            number => number.parse::<u16>().map_err(|_| {
                format!("{listen:?}: port {number:?} is not a number or a known service")
            })?,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(ListenAddress {
            host: host.to_string(),
            port,
            text: listen.to_string(),
        })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits a listen address into host and port (see [`ListenAddress::parse`]).
pub fn parse_listen(listen: &str) -> Result<(String, u16), String> {
    ListenAddress::parse(listen).map(|address| (address.host, address.port))
}

/// A notification's `event`: one the data plane sends.
pub fn check_notification_event(event: &str) -> Result<(), String> {
    NotificationEvent::parse(event).map(|_| ())
}

/// A notification's `url`: http or https.
pub fn check_notification_url(text: &str) -> Result<(), String> {
    parse_notification_url(text).map(|_| ())
}

fn parse_notification_url(text: &str) -> Result<Url, String> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
        Ok(url) => Err(format!("unsupported scheme {:?}", url.scheme())),
        Err(e) => Err(format!("invalid URL {text:?}: {e}")),
    }
}

impl StaticSource {
    /// Parses a static resource's `remote`.
    pub fn parse(remote: &str) -> Result<StaticSource, String> {
        match Url::parse(remote) {
            Ok(url) if url.scheme() == "file" => Ok(StaticSource::File(url_path(&url))),
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(StaticSource::Remote(url)),
            Ok(url) => Err(format!(
                "unsupported scheme {:?} for a static resource",
                url.scheme()
            )),
            Err(e) => Err(format!("invalid URL {remote:?}: {e}")),
        }
    }
}

impl ValidConfig {
    /// The config as written.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every resource as written and parsed, in configuration order.
    pub fn parsed_resources(&self) -> impl Iterator<Item = (&Resource, &ParsedResource)> {
        self.config.resources.iter().zip(&self.parsed)
    }
}

impl Deref for ValidConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

impl PartialEq<Config> for ValidConfig {
    fn eq(&self, other: &Config) -> bool {
        self.config == *other
    }
}

impl Serialize for ValidConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.config.serialize(serializer)
    }
}

impl Config {
    /// Checks what the types alone cannot, and parses what has a syntax of
    /// its own. Every problem is reported, not just the first.
    pub fn validate(&self) -> Result<ValidConfig, ConfigErrors> {
        let mut errors = Vec::new();
        let mut error = |path: String, message: String| errors.push(ConfigError { path, message });

        let tls_address = match self.tlslisten.as_str() {
            "" => None,
            tls => ListenAddress::parse(tls)
                .map_err(|message| error("tlslisten".into(), message))
                .ok(),
        };
        let https_only = self.listen.is_empty() && !self.tlslisten.is_empty();
        let listen_address = match https_only {
            true => None,
            false => ListenAddress::parse(&self.listen)
                .map_err(|message| error("listen".into(), message))
                .ok(),
        };
        for (key, value) in [("tlscert", &self.tlscert), ("tlskey", &self.tlskey)] {
            match (self.tlslisten.is_empty(), value.is_empty()) {
                (false, true) => error(
                    key.into(),
                    "tlslisten needs a certificate and its key".into(),
                ),
                (true, false) => error(key.into(), "is set but tlslisten is not".into()),
                _ => {}
            }
        }
        let admin_address = match self.adminlisten.as_str() {
            "" => None,
            admin => ListenAddress::parse(admin)
                .map_err(|message| error("adminlisten".into(), message))
                .ok(),
        };
        if self.inputbuffer == 0 {
            error("inputbuffer".into(), "must be at least 1 packet".into());
        }
        if self.outputbuffer == 0 {
            error("outputbuffer".into(), "must be at least 1 packet".into());
        }
        if self.instantstartlimit == 0 {
            error(
                "instantstartlimit".into(),
                "must be at least 1 MiB (turn instant start off with instantstart: false)".into(),
            );
        }
        if self.headertimeout == 0 {
            error("headertimeout".into(), "must be at least 1 second".into());
        }
        if self.maxconnections > 0 && self.fullconnections > self.maxconnections {
            error(
                "fullconnections".into(),
                format!(
                    "soft limit {} is above the hard limit maxconnections {}",
                    self.fullconnections, self.maxconnections
                ),
            );
        }

        let stream_paths: HashSet<&str> = self
            .resources
            .iter()
            .filter(|r| r.kind == ResourceType::Stream)
            .map(|r| r.serve.as_str())
            .collect();
        let mut served_paths = HashSet::new();
        let mut parsed = Vec::new();
        for (i, resource) in self.resources.iter().enumerate() {
            let at = |key: &str| format!("resources[{i}].{key}");
            if !resource.serve.starts_with('/') {
                error(
                    at("serve"),
                    format!("{:?} must start with /", resource.serve),
                );
            } else if !served_paths.insert(resource.serve.as_str()) {
                error(at("serve"), format!("{:?} is served twice", resource.serve));
            }
            let serves = match resource.kind {
                ResourceType::Stream => {
                    if resource.upstream_urls().is_empty() {
                        error(
                            at("remotes"),
                            "a stream needs at least one upstream URL".into(),
                        );
                    }
                    let remote = (!resource.remote.is_empty())
                        .then(|| ("remote".to_string(), &resource.remote));
                    let remotes = resource
                        .remotes
                        .iter()
                        .enumerate()
                        .map(|(j, url)| (format!("remotes[{j}]"), url));
                    let mut upstreams = Vec::new();
                    for (key, url) in remote.into_iter().chain(remotes) {
                        match Upstream::parse(url) {
                            Ok(upstream) => upstreams.push(upstream),
                            Err(message) => error(at(&key), message),
                        }
                    }
                    Some(Served::Stream { upstreams })
                }
                ResourceType::Static => StaticSource::parse(&resource.remote)
                    .map_err(|message| error(at("remote"), message))
                    .ok()
                    .map(Served::Static),
                ResourceType::Api => {
                    let stream = || {
                        if stream_paths.contains(resource.remote.as_str()) {
                            Ok(resource.remote.clone())
                        } else {
                            Err((
                                at("remote"),
                                format!(
                                    "{:?} is not the serve path of any stream",
                                    resource.remote
                                ),
                            ))
                        }
                    };
                    let target = match resource.api {
                        None => Err((
                            at("api"),
                            "an api resource needs one of health, statistics, check, control, prometheus"
                                .to_string(),
                        )),
                        Some(ApiKind::Health) => Ok(ApiTarget::Health),
                        Some(ApiKind::Statistics) => Ok(ApiTarget::Statistics),
                        Some(ApiKind::Prometheus) => Ok(ApiTarget::Prometheus),
                        Some(ApiKind::Check) => stream().map(|stream| ApiTarget::Check { stream }),
                        Some(ApiKind::Control) => {
                            stream().map(|stream| ApiTarget::Control { stream })
                        }
                    };
                    target
                        .map_err(|(path, message)| error(path, message))
                        .ok()
                        .map(Served::Api)
                }
            };
            parsed.extend(serves.map(|serves| ParsedResource {
                serves,
                auth: Authenticator::new(&resource.authentication, self),
            }));
            if resource.kind != ResourceType::Stream {
                for (key, set) in [
                    ("contenttimeout", resource.contenttimeout.is_some()),
                    ("ccerrorlimit", resource.ccerrorlimit.is_some()),
                ] {
                    if set {
                        error(at(key), "only stream resources have content checks".into());
                    }
                }
            }
            if !resource.preamble.is_empty() && !Path::new(&resource.preamble).is_file() {
                error(
                    at("preamble"),
                    format!("{:?} is not a readable file", resource.preamble),
                );
            }
            self.validate_authentication(
                &resource.authentication,
                &at("authentication"),
                &mut error,
            );
        }

        let mut notifications = Vec::new();
        for (i, notification) in self.notifications.iter().enumerate() {
            let at = |key: &str| format!("notifications[{i}].{key}");
            let event = NotificationEvent::parse(&notification.event)
                .map_err(|message| error(at("event"), message))
                .ok();
            if notification.kind != "url" {
                error(
                    at("type"),
                    format!("unknown type {:?}, expected url", notification.kind),
                );
            }
            let url = parse_notification_url(&notification.url)
                .map_err(|message| error(at("url"), message))
                .ok();
            if notification.authentication.kind == AuthType::Token {
                error(
                    at("authentication.type"),
                    "token is for resources (signed URLs); a notification sends basic or bearer"
                        .into(),
                );
            }
            self.validate_authentication(
                &notification.authentication,
                &at("authentication"),
                &mut error,
            );
            if let (Some(event), Some(url)) = (event, url) {
                notifications.push(ValidNotification {
                    event,
                    url,
                    authorization: self.first_credential(&notification.authentication),
                });
            }
        }

        // A listen address that did not parse is among the errors.
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(ValidConfig {
            config: self.clone(),
            listen_address,
            tls_address,
            admin_address,
            parsed,
            callbacks: notifications,
        })
    }

    fn validate_authentication(
        &self,
        auth: &Authentication,
        at: &str,
        error: &mut impl FnMut(String, String),
    ) {
        if auth.is_none() {
            return;
        }
        for user in auth.named_users() {
            if !self.userlist.contains_key(user) {
                error(
                    format!("{at}.users"),
                    format!("user {user:?} is not in the userlist"),
                );
            }
        }
    }
}
