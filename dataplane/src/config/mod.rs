//! The configuration file, `restreamer.json`.
//!
//! The format is the Go restreamer's, key for key, so an existing
//! `restreamer.json` keeps working. Loading happens in three steps:
//!
//! 1. the text is parsed as JSON (syntax errors carry line and column);
//! 2. every `""` key is dropped: the original uses them as comments, often
//!    several in one object; and every key whose value is `null` is dropped,
//!    so it keeps its default (as Go's JSON decoder does: a `null` list or
//!    map is empty, a `null` number or string leaves the default);
//! 3. the result is deserialised into [`Config`] with unknown keys refused,
//!    then [`Config::validate`] checks what types cannot express (limits that
//!    contradict each other, URLs that cannot work, references to streams
//!    that do not exist) and returns a [`ValidConfig`]: the config with
//!    every value parsed into its type (`valid.rs`; upstream URLs in
//!    `upstream.rs`), so that nothing downstream parses again.
//!
//! Every error names the key path it is about, e.g.
//! `resources[2].remote: unsupported scheme "rtmp"`.
//!
//! This folder uses nothing else of the crate: every other part may use it.

mod auth;
mod upstream;
mod valid;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use auth::Authenticator;
pub use upstream::{url_path, Upstream, UpstreamKind};
pub use valid::{
    check_notification_event, check_notification_url, parse_listen, ApiTarget, ListenAddress,
    NotificationEvent, ParsedResource, Served, StaticSource, ValidConfig, ValidNotification,
};

mod cidr;
pub mod token;
pub use cidr::Cidr;

/// The whole configuration of one data-plane process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on: `host:port`, `:port`, or a service name as port
    /// (`localhost:http`).
    pub listen: String,
    /// Connect timeout for upstreams, in seconds; 0 = none.
    pub timeout: u64,
    /// Minimum delay between upstream connection attempts, in seconds;
    /// 0 = never reconnect after the first loss.
    pub reconnect: u64,
    /// Close an upstream that sends nothing for this many seconds; 0 = never.
    pub readtimeout: u64,
    /// Per-stream input buffer, in 188-byte packets (also sizes the kernel
    /// receive buffer of UDP sockets).
    pub inputbuffer: usize,
    /// Per-client output queue, in 188-byte packets. A client that falls
    /// further behind than this loses packets.
    pub outputbuffer: usize,
    /// Hard limit of concurrent stream clients, all streams together; 0 = none.
    pub maxconnections: usize,
    /// Soft limit: at or above it the proxy reports itself "full"; 0 = none.
    pub fullconnections: usize,
    /// Disable statistics.
    pub nostats: bool,
    /// Period of `heartbeat` notifications, in seconds.
    pub heartbeatinterval: u64,
    /// Access log file; empty = standard output only.
    pub log: String,
    /// Enable the profiler endpoint (accepted for compatibility).
    pub profile: bool,
    /// Users for `authentication` stanzas.
    pub userlist: BTreeMap<String, User>,
    /// What is served.
    pub resources: Vec<Resource>,
    /// Event callbacks.
    pub notifications: Vec<Notification>,
    /// Beyond the original: the longest time, in milliseconds, that received
    /// packets wait to be sent to clients so they go out in batches (fewer
    /// wake-ups and system calls per client). 0 = send every read at once.
    pub flushms: u64,
    /// Beyond the original: a second address serving only `/metrics`,
    /// `/healthz` and `/readyz` (for Kubernetes probes and Prometheus).
    /// Empty = those paths are served on `listen`.
    pub adminlisten: String,
    /// Beyond the original: seconds that stream clients keep being served
    /// after SIGTERM, while readiness reports not ready.
    pub draintime: u64,
    /// Beyond the original: seconds a client has to send its request
    /// headers before it is disconnected (slow clients hold sockets).
    pub headertimeout: u64,
    /// Beyond the original: a JSON file of more users, in the `userlist`
    /// format (e.g. a mounted Kubernetes Secret), so that passwords need not
    /// be in the config itself. A relative path is relative to the config.
    pub userfile: String,
    /// Beyond the original: seconds an upstream may stay connected without
    /// sending a PAT and PMT, or any packet of the elementary streams its
    /// PMT lists, before it counts as lost (failover). 0 = off. A stream
    /// may set its own.
    pub contenttimeout: u64,
    /// Beyond the original: continuity errors within 10 seconds that count
    /// as a lost upstream (failover). 0 = off. A stream may set its own.
    pub ccerrorlimit: u64,
    /// Beyond the original: an address serving the same routes as `listen`
    /// over HTTPS (HTTP/1.1 and HTTP/2 by ALPN). Empty = no HTTPS. With it,
    /// `listen` may be empty: HTTPS only.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tlslisten: String,
    /// Beyond the original: the PEM certificate chain for `tlslisten`, leaf
    /// first; relative to the config file. Watched: a new one is taken up by
    /// new connections.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tlscert: String,
    /// Beyond the original: the PEM private key of `tlscert`; relative to
    /// the config file. Watched with it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tlskey: String,
    /// Beyond the original: stream connections one client address may hold
    /// at once; past it, its new stream clients are refused as past the
    /// hard limit. 0 = no limit.
    #[serde(skip_serializing_if = "is_default")]
    pub maxperclient: usize,
    /// Beyond the original: peers (CIDRs, or single addresses) whose
    /// `Forwarded` / `X-Forwarded-For` headers name the client address.
    /// Those headers are ignored from every other peer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trustedproxies: Vec<Cidr>,
    /// Beyond the original: start every new client on the latest random
    /// access point (a keyframe), after fresh PAT and PMT, instead of on the
    /// next packet. Per stream, `instantstart` of the resource wins.
    pub instantstart: bool,
    /// Beyond the original: the most each stream holds for instant start
    /// (the stream since its latest random access point), in MiB.
    pub instantstartlimit: u64,
    /// Beyond the original: seconds a stream client may have packets
    /// waiting and read none before it is disconnected (a stalled client
    /// holds megabytes of kernel send buffer); 0 = never.
    pub stalltimeout: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "localhost:http".into(),
            timeout: 0,
            reconnect: 10,
            readtimeout: 0,
            inputbuffer: 1000,
            outputbuffer: 400,
            maxconnections: 0,
            fullconnections: 0,
            nostats: false,
            heartbeatinterval: 60,
            log: String::new(),
            profile: false,
            userlist: BTreeMap::new(),
            resources: Vec::new(),
            notifications: Vec::new(),
            flushms: 10,
            adminlisten: String::new(),
            draintime: 0,
            headertimeout: 10,
            userfile: String::new(),
            contenttimeout: 10,
            ccerrorlimit: 0,
            tlslisten: String::new(),
            tlscert: String::new(),
            tlskey: String::new(),
            maxperclient: 0,
            trustedproxies: Vec::new(),
            instantstart: true,
            instantstartlimit: 16,
            stalltimeout: 30,
        }
    }
}

/// A user of the `userlist`.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct User {
    pub password: String,
}

// Passwords must not reach logs through a `{:?}` of the config.
impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("User { password: \"...\" }")
    }
}

/// What kind of thing a resource serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceType {
    /// A live transport stream from one of `remotes`.
    #[default]
    Stream,
    /// A file, or a remote document cached in memory.
    Static,
    /// One of the built-in APIs.
    Api,
}

/// The built-in APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKind {
    Health,
    Statistics,
    Check,
    Control,
    Prometheus,
}

/// One served path.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resource {
    #[serde(rename = "type")]
    pub kind: ResourceType,
    /// The local path, starting with `/`.
    pub serve: String,
    /// One upstream URL (for `check`/`control` APIs: a stream's `serve` path).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote: String,
    /// More upstream URLs; `remote`, if set, is tried as one of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<String>,
    /// For `type: api`: which API. `""` (the original's placeholder on
    /// other resources) is the same as absent.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "api_or_placeholder"
    )]
    pub api: Option<ApiKind>,
    /// For `type: static` with a remote URL: seconds to cache the body.
    #[serde(skip_serializing_if = "is_default")]
    pub cache: u64,
    /// Network interface to join multicast groups on.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub clientinterface: String,
    /// Largest datagram expected from a datagram upstream, in bytes.
    #[serde(skip_serializing_if = "is_default")]
    pub mru: usize,
    /// A file sent to every new client before the live packets.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub preamble: String,
    /// For streams: instant start for this stream; unset = the global
    /// `instantstart`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instantstart: Option<bool>,
    #[serde(skip_serializing_if = "is_default")]
    pub authentication: Authentication,
    /// For streams: the global `contenttimeout` for this stream only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contenttimeout: Option<u64>,
    /// For streams: the global `ccerrorlimit` for this stream only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ccerrorlimit: Option<u64>,
}

/// `"api": ""` is a placeholder (the original's documented example writes
/// every key on every resource): none. Anything else must name an API.
fn api_or_placeholder<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ApiKind>, D::Error> {
    use serde::de::IntoDeserializer;
    let name = String::deserialize(deserializer)?;
    if name.is_empty() {
        return Ok(None);
    }
    ApiKind::deserialize(name.into_deserializer()).map(Some)
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl ResourceType {
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Stream => "stream",
            ResourceType::Static => "static",
            ResourceType::Api => "api",
        }
    }
}

impl Resource {
    /// The keys set to something other than their empty placeholder on a
    /// resource whose type does not use them: the original's documented
    /// example writes every key on every resource, and ignores those that
    /// do not apply; a value there was probably meant for something.
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let (stream, file, api) = (
            self.kind == ResourceType::Stream,
            self.kind == ResourceType::Static,
            self.kind == ResourceType::Api,
        );
        let uses_remote = !matches!(
            self.api,
            Some(ApiKind::Health | ApiKind::Statistics | ApiKind::Prometheus)
        );
        [
            ("api", !api && self.api.is_some()),
            ("remote", api && !uses_remote && !self.remote.is_empty()),
            ("remotes", !stream && !self.remotes.is_empty()),
            ("cache", !file && self.cache != 0),
            (
                "clientinterface",
                !stream && !self.clientinterface.is_empty(),
            ),
            ("mru", !stream && self.mru != 0),
            ("preamble", !stream && !self.preamble.is_empty()),
        ]
        .into_iter()
        .filter_map(|(key, ignored)| ignored.then_some(key))
        .collect()
    }

    /// The upstream URLs in configuration order: `remote` first, then
    /// `remotes`.
    pub fn upstream_urls(&self) -> Vec<&str> {
        std::iter::once(self.remote.as_str())
            .filter(|remote| !remote.is_empty())
            .chain(self.remotes.iter().map(String::as_str))
            .collect()
    }
}

/// How a resource or a notification authenticates.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authentication {
    #[serde(rename = "type")]
    pub kind: AuthType,
    pub realm: String,
    /// A single user (notifications send this one's credentials).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Users allowed in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

impl Authentication {
    pub fn is_none(&self) -> bool {
        self.kind == AuthType::None
    }

    /// The users named: `user`, if set, then `users`.
    pub fn named_users(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.user)
            .filter(|user| !user.is_empty())
            .chain(self.users.iter())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    #[default]
    #[serde(rename = "")]
    None,
    Basic,
    Bearer,
    /// Signed URLs: each user's password is a key that signs a path and an
    /// expiry time (see `front::token`).
    Token,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notification {
    pub event: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    #[serde(skip_serializing_if = "is_default")]
    pub authentication: Authentication,
}

/// A configuration problem: where it is, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `resources[2].remote`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

impl Config {
    /// Reads and validates a configuration file, with its `userfile`.
    pub fn load(path: &Path) -> Result<ValidConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::one("", format!("cannot read {}: {e}", path.display())))?;
        Config::parse_in(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and validates a configuration document; a relative `userfile`
    /// is looked up in the working directory.
    pub fn parse(text: &str) -> Result<ValidConfig, ConfigErrors> {
        Config::parse_in(text, Path::new("."))
    }

    /// Parses and validates a configuration document whose relative paths
    /// are relative to `base`.
    pub fn parse_in(text: &str, base: &Path) -> Result<ValidConfig, ConfigErrors> {
        let mut document: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ConfigErrors::one("", format!("invalid JSON: {e}")))?;
        strip_comments(&mut document);
        let config: Config = serde_path_to_error::deserialize(document).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            ConfigErrors::one(path, e.into_inner().to_string())
        })?;
        config.with_userfile(base)?.validate()
    }

    /// The users of the config plus those of its `userfile`; the file's
    /// entries win, so a Secret can override a placeholder.
    fn with_userfile(mut self, base: &Path) -> Result<Config, ConfigErrors> {
        if self.userfile.is_empty() {
            return Ok(self);
        }
        let path = base.join(&self.userfile);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigErrors::one("userfile", format!("cannot read {}: {e}", path.display()))
        })?;
        let users: BTreeMap<String, User> =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
                .map_err(|e| {
                    ConfigErrors::one(
                        format!("userfile {}", path.display()),
                        format!("{}: {}", e.path(), e.inner()),
                    )
                })?;
        self.userlist.extend(users);
        Ok(self)
    }

    /// Settings that load but probably do not do what their author meant:
    /// logged when the config is applied, printed by `--check`.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let resources = self
            .resources
            .iter()
            .enumerate()
            .map(|(i, resource)| (format!("resources[{i}]"), &resource.authentication));
        let notifications = self
            .notifications
            .iter()
            .enumerate()
            .map(|(i, notification)| (format!("notifications[{i}]"), &notification.authentication));
        let mut warnings: Vec<ConfigError> = resources
            .chain(notifications)
            .filter(|(_, auth)| auth.is_none() && (!auth.user.is_empty() || !auth.users.is_empty()))
            .map(|(at, _)| ConfigError {
                path: format!("{at}.authentication.type"),
                message: "users are named but the type is empty, so no credentials are asked for \
                          or sent; set it to basic or bearer"
                    .into(),
            })
            .collect();
        for (i, resource) in self.resources.iter().enumerate() {
            for key in resource.ignored_keys() {
                warnings.push(ConfigError {
                    path: format!("resources[{i}].{key}"),
                    message: format!(
                        "ignored: a {} resource does not use it (leave it empty, 0 or out)",
                        resource.kind.name()
                    ),
                });
            }
        }
        warnings.extend(self.buffer_warnings());
        warnings
    }

    /// Buffer settings that cannot work as written.
    fn buffer_warnings(&self) -> Vec<ConfigError> {
        let mut warnings = Vec::new();
        if self.flushms >= 1000 {
            warnings.push(ConfigError {
                path: "flushms".into(),
                message: format!(
                    "{} ms: packets wait that long before clients get them, so players see bursts \
                     of a second or more and may stall; keep it well under 1000 (default 10)",
                    self.flushms
                ),
            });
        }
        if self.outputbuffer < 28 {
            warnings.push(ConfigError {
                path: "outputbuffer".into(),
                message: format!(
                    "{} packets is less than four datagrams of 7 packets: chunks are cut to a \
                     quarter of it, one system call per client each; clients may still lag one \
                     second of the stream, so a larger value costs nothing per client",
                    self.outputbuffer
                ),
            });
        }
        warnings
    }

    pub fn timeout(&self) -> Option<Duration> {
        seconds(self.timeout)
    }

    pub fn readtimeout(&self) -> Option<Duration> {
        seconds(self.readtimeout)
    }

    /// `None` means: never reconnect after the first loss.
    pub fn reconnect(&self) -> Option<Duration> {
        seconds(self.reconnect)
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flushms)
    }

    /// A stream's content timeout (its own, else the global one); `None`
    /// = off.
    pub fn content_timeout(&self, resource: &Resource) -> Option<Duration> {
        seconds(resource.contenttimeout.unwrap_or(self.contenttimeout))
    }

    /// A stream's continuity-error limit per 10 s (its own, else the
    /// global one); `None` = off.
    pub fn cc_error_limit(&self, resource: &Resource) -> Option<u64> {
        Some(resource.ccerrorlimit.unwrap_or(self.ccerrorlimit)).filter(|&limit| limit > 0)
    }
}

fn seconds(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

/// The first 16 hex digits of the SHA-256 of the config's canonical JSON:
/// the config's name in metrics, logs and the operator's status.
pub fn config_hash(config: &Config) -> String {
    short_digest(&serde_json::to_vec(config).expect("a config serialises"))
}

/// The first 16 hex digits (64 bits) of the SHA-256 of `data`: config
/// hashes and static documents' ETags.
pub fn short_digest(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Drops every `""` key, at any depth (the original's comment convention),
/// and every key whose value is `null` (it keeps its default).
fn strip_comments(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("");
            map.retain(|_, value| !value.is_null());
            map.values_mut().for_each(strip_comments);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_comments),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_object_gets_the_original_defaults() {
        let config = Config::parse("{}").unwrap();
        assert_eq!(config.listen, "localhost:http");
        assert_eq!(config.reconnect, 10);
        assert_eq!(config.inputbuffer, 1000);
        assert_eq!(config.outputbuffer, 400);
        assert_eq!(config.heartbeatinterval, 60);
        assert_eq!(config.maxconnections, 0);
    }

    #[test]
    fn comment_keys_are_ignored_even_when_repeated() {
        let config = Config::parse(
            r#"{"": "first comment", "listen": ":8000", "": "second comment",
                "resources": [{"": "a stream", "type": "stream", "serve": "/a",
                               "remote": "tcp://127.0.0.1:1234"}]}"#,
        )
        .unwrap();
        assert_eq!(config.listen, ":8000");
        assert_eq!(config.resources.len(), 1);
    }

    /// Found by the `config` fuzz target: users without a type were dropped
    /// on the way back, so the operator's rendering could lose settings.
    #[test]
    fn a_config_comes_back_unchanged_through_serialisation() {
        let documented = include_str!("../../tests/fixtures/documented.json");
        let users_without_type = r#"{"userlist": {"op": {"password": "x"}},
            "resources": [{"type": "api", "serve": "/statistics", "api": "statistics",
                           "authentication": {"users": ["op"]}}]}"#;
        for text in [documented, users_without_type] {
            let config = Config::parse(text).unwrap();
            let written = serde_json::to_string(&config).unwrap();
            assert_eq!(Config::parse(&written).unwrap(), config, "{written}");
        }
    }

    #[test]
    fn users_without_an_authentication_type_are_warned_about() {
        let config = Config::parse(
            r#"{"userlist": {"op": {"password": "x"}},
                "resources": [{"type": "api", "serve": "/statistics", "api": "statistics",
                               "authentication": {"users": ["op"]}},
                              {"type": "api", "serve": "/health", "api": "health",
                               "authentication": {"type": "basic", "users": ["op"]}}]}"#,
        )
        .unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].path, "resources[0].authentication.type");
        assert!(warnings[0].message.contains("no credentials are asked for"));
        assert!(Config::parse("{}").unwrap().warnings().is_empty());
    }

    /// The original's documented example writes every key on every
    /// resource, with empty placeholders where a key does not apply, and
    /// generated configs write `null` for an empty list or map.
    #[test]
    fn placeholders_and_nulls_load_as_the_original_reads_them() {
        let config = Config::parse(
            r#"{"reconnect": null, "userlist": null, "notifications": null,
                "resources": [
                {"type": "stream", "api": "", "serve": "/a", "remote": "tcp://a:1",
                 "remotes": null, "cache": 0, "mru": 1500, "preamble": "",
                 "authentication": {"type": "", "realm": "", "user": "", "users": null}},
                {"type": "api", "api": "health", "serve": "/health", "remote": "",
                 "remotes": [], "cache": 0, "clientinterface": "", "preamble": ""}]}"#,
        )
        .unwrap();
        assert_eq!(config.reconnect, 10, "null keeps the default");
        assert!(config.userlist.is_empty() && config.notifications.is_empty());
        assert_eq!(config.resources[0].api, None);
        assert_eq!(config.resources[0].upstream_urls(), ["tcp://a:1"]);
        assert_eq!(config.resources[1].api, Some(ApiKind::Health));
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        for fixture in [
            include_str!("../../tests/fixtures/documented.json"),
            include_str!("../../tests/fixtures/minimal.json"),
        ] {
            let config = Config::parse(fixture).unwrap();
            assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        }
        // Unknown keys and unknown APIs are still errors.
        assert!(
            errors(r#"{"resources": [{"type": "stream", "serve": "/a", "apí": ""}]}"#)
                .starts_with("resources[0].apí: unknown field")
        );
        assert!(
            errors(r#"{"resources": [{"type": "api", "serve": "/a", "api": "healthz"}]}"#)
                .starts_with("resources[0].api: unknown variant `healthz`")
        );
    }

    #[test]
    fn buffer_settings_that_cannot_work_are_warned_about() {
        let config = Config::parse(r#"{"flushms": 1000, "outputbuffer": 20}"#).unwrap();
        let warned: Vec<String> = config.warnings().iter().map(|w| w.path.clone()).collect();
        assert_eq!(warned, ["flushms", "outputbuffer"]);
        let config = Config::parse(r#"{"flushms": 999, "outputbuffer": 28}"#).unwrap();
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn a_placeholder_with_a_value_where_it_means_nothing_is_warned_about() {
        let config = Config::parse(
            r#"{"resources": [
                {"type": "stream", "api": "health", "serve": "/a", "remote": "tcp://a:1", "cache": 5},
                {"type": "api", "api": "health", "serve": "/health", "remote": "/a",
                 "remotes": ["tcp://b:2"], "mru": 1500, "preamble": "/etc/passwd", "clientinterface": "eth0"},
                {"type": "static", "serve": "/s", "remote": "file:///etc/hostname", "cache": 5}]}"#,
        )
        .unwrap();
        let warned: Vec<String> = config.warnings().iter().map(|w| w.path.clone()).collect();
        assert_eq!(
            warned,
            [
                "resources[0].api",
                "resources[0].cache",
                "resources[1].remote",
                "resources[1].remotes",
                "resources[1].clientinterface",
                "resources[1].mru",
                "resources[1].preamble",
            ]
        );
        assert_eq!(
            config.warnings()[0].to_string(),
            "resources[0].api: ignored: a stream resource does not use it (leave it empty, 0 or out)"
        );
    }

    #[test]
    fn remote_and_remotes_are_merged_remote_first() {
        let config = Config::parse(
            r#"{"resources": [{"type": "stream", "serve": "/a", "remote": "tcp://a:1",
                               "remotes": ["tcp://b:2", "tcp://c:3"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            config.resources[0].upstream_urls(),
            ["tcp://a:1", "tcp://b:2", "tcp://c:3"]
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(
            errors(r#"{"listen": ":80", "maxconnection": 5}"#)
                .split(',')
                .next()
                .unwrap(),
            "maxconnection: unknown field `maxconnection`"
        );
        let nested = errors(r#"{"resources": [{"type": "stream", "serve": "/a", "remtoe": "x"}]}"#);
        assert!(
            nested.starts_with("resources[0].remtoe: unknown field `remtoe`"),
            "{nested}"
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let message = errors(r#"{"outputbuffer": "400"}"#);
        assert!(
            message.starts_with("outputbuffer: invalid type: string"),
            "{message}"
        );
        let message = errors(r#"{"resources": [{"type": "video", "serve": "/a"}]}"#);
        assert!(
            message.starts_with("resources[0].type: unknown variant `video`"),
            "{message}"
        );
    }

    #[test]
    fn json_syntax_errors_give_line_and_column() {
        let message = errors("{\n  \"listen\": \":80\",,\n}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn values_that_cannot_work_are_refused() {
        assert_eq!(
            errors(r#"{"outputbuffer": 0}"#),
            "outputbuffer: must be at least 1 packet"
        );
        assert_eq!(
            errors(r#"{"inputbuffer": 0}"#),
            "inputbuffer: must be at least 1 packet"
        );
        assert_eq!(
            errors(r#"{"maxconnections": 10, "fullconnections": 11}"#),
            "fullconnections: soft limit 11 is above the hard limit maxconnections 10"
        );
        assert_eq!(
            errors(r#"{"listen": "localhost:htp"}"#),
            "listen: \"localhost:htp\": port \"htp\" is not a number or a known service"
        );
    }

    #[test]
    fn bad_resources_are_named_by_index() {
        let message = errors(
            r#"{"resources": [
                {"type": "stream", "serve": "/ok", "remote": "tcp://127.0.0.1:1"},
                {"type": "stream", "serve": "/bad", "remotes": ["tcp://127.0.0.1:1", "rtmp://x/y"]},
                {"type": "stream", "serve": "none", "remote": "tcp://127.0.0.1:1"},
                {"type": "stream", "serve": "/empty"},
                {"type": "api", "api": "check", "serve": "/check", "remote": "/nothere"},
                {"type": "api", "serve": "/what"}
            ]}"#,
        );
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(
            lines,
            [
                "resources[1].remotes[1]: unsupported scheme \"rtmp\" in \"rtmp://x/y\"",
                "resources[2].serve: \"none\" must start with /",
                "resources[3].remotes: a stream needs at least one upstream URL",
                "resources[4].remote: \"/nothere\" is not the serve path of any stream",
                "resources[5].api: an api resource needs one of health, statistics, check, control, prometheus",
            ]
        );
    }

    #[test]
    fn duplicate_paths_and_unknown_users_are_refused() {
        let message = errors(
            r#"{"userlist": {"admin": {"password": "x"}},
                "resources": [
                {"type": "stream", "serve": "/a", "remote": "tcp://127.0.0.1:1"},
                {"type": "stream", "serve": "/a", "remote": "tcp://127.0.0.1:1",
                 "authentication": {"type": "basic", "realm": "r", "users": ["admin", "eve"]}}
            ]}"#,
        );
        assert_eq!(
            message,
            "resources[1].serve: \"/a\" is served twice\n\
             resources[1].authentication.users: user \"eve\" is not in the userlist"
        );
    }

    #[test]
    fn bad_notifications_are_refused() {
        let message = errors(
            r#"{"notifications": [{"event": "limit_hot", "type": "url", "url": "ftp://x"}]}"#,
        );
        assert_eq!(
            message,
            "notifications[0].event: unknown event \"limit_hot\", expected limit_hit, limit_miss or heartbeat\n\
             notifications[0].url: unsupported scheme \"ftp\""
        );
    }

    #[test]
    fn content_checks_are_global_with_a_per_stream_override() {
        let config = Config::parse(
            r#"{"contenttimeout": 5, "ccerrorlimit": 20, "resources": [
                {"type": "stream", "serve": "/a", "remote": "tcp://a:1"},
                {"type": "stream", "serve": "/b", "remote": "tcp://b:1",
                 "contenttimeout": 0, "ccerrorlimit": 0}]}"#,
        )
        .unwrap();
        let (a, b) = (&config.resources[0], &config.resources[1]);
        assert_eq!(config.content_timeout(a), Some(Duration::from_secs(5)));
        assert_eq!(config.cc_error_limit(a), Some(20));
        assert_eq!(config.content_timeout(b), None);
        assert_eq!(config.cc_error_limit(b), None);
        let defaults = Config::parse("{}").unwrap();
        assert_eq!(defaults.contenttimeout, 10);
        assert_eq!(defaults.ccerrorlimit, 0);
        assert_eq!(
            errors(
                r#"{"resources": [{"type": "api", "api": "health", "serve": "/h", "contenttimeout": 3}]}"#
            ),
            "resources[0].contenttimeout: only stream resources have content checks"
        );
    }

    #[test]
    fn tls_keys_go_together() {
        let config = Config::parse(
            r#"{"listen": "", "tlslisten": ":8443", "tlscert": "c.pem", "tlskey": "k.pem",
                "trustedproxies": ["10.0.0.0/8", "192.0.2.7"], "maxperclient": 4}"#,
        )
        .unwrap();
        assert_eq!(config.trustedproxies[1].to_string(), "192.0.2.7/32");
        assert_eq!(
            errors(r#"{"tlslisten": ":8443", "tlskey": "k.pem"}"#),
            "tlscert: tlslisten needs a certificate and its key"
        );
        assert_eq!(
            errors(r#"{"tlscert": "c.pem", "tlskey": "k.pem"}"#),
            "tlscert: is set but tlslisten is not\ntlskey: is set but tlslisten is not"
        );
        assert!(errors(r#"{"listen": ""}"#).starts_with("listen: "));
        assert_eq!(
            errors(r#"{"trustedproxies": ["10.0.0.0/8", "10.0.0/8"]}"#),
            "trustedproxies[1]: \"10.0.0/8\" is not an address or CIDR"
        );
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen(":8000").unwrap(), ("".into(), 8000));
        assert_eq!(
            parse_listen("localhost:http").unwrap(),
            ("localhost".into(), 80)
        );
        assert_eq!(parse_listen("[::1]:8080").unwrap(), ("::1".into(), 8080));
        assert!(parse_listen("8000").is_err());
    }

    #[test]
    fn serialising_and_loading_again_gives_the_same_config() {
        let text = include_str!("../../../examples/restreamer.json");
        let config = Config::parse(text).unwrap();
        let again = Config::parse(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(config, again);
    }
}
