//! Upstream URLs: what each scheme means, parsed once when the config is
//! validated; the stream's source connects to the parsed [`Upstream`].

use std::fmt;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;
use url::Url;

/// One parsed upstream URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// The URL as shown in logs, with any password replaced.
    display: String,
    pub kind: UpstreamKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamKind {
    /// `file:///path`: a regular file or a FIFO. `?realtime` paces a
    /// recorded file by its PCR; `?loop` starts it again at its end.
    File {
        path: PathBuf,
        realtime: bool,
        looped: bool,
    },
    /// `http://` and `https://`: a GET whose body is the stream.
    Http(Url),
    /// `tcp://host:port`: a connection whose bytes are the stream.
    Tcp { address: String },
    /// `unix:///path`: a stream socket to connect to.
    Unix { path: PathBuf },
    /// `unixpacket:///path`: a sequenced-packet socket to connect to.
    UnixPacket { path: PathBuf },
    /// `unixgram:///path`: a datagram socket bound at `path` that producers
    /// send to (a datagram socket cannot be fed without an address).
    UnixGram { path: PathBuf },
    /// `udp://host:port`: datagrams received on that address; a multicast
    /// group address is joined (on `clientinterface` if set).
    Udp { host: String, port: u16 },
    /// `fork:///path/to/program?arg1+arg2`: a command whose standard output
    /// is the stream.
    Fork { program: PathBuf, args: Vec<String> },
}

impl Upstream {
    /// Parses an upstream URL; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Upstream, String> {
        // `udp://:1234` (any address) is valid for us, not for the URL parser.
        let any_host = text.starts_with("udp://:") || text.starts_with("tcp://:");
        let parsed = if any_host {
            Url::parse(&text.replacen("://:", "://0.0.0.0:", 1))
        } else {
            Url::parse(text)
        };
        let url = parsed.map_err(|e| format!("invalid URL {text:?}: {e}"))?;
        let path = || -> Result<PathBuf, String> {
            let path = url_path(&url);
            if path.as_os_str().is_empty() {
                Err(format!("{text:?} names no path"))
            } else {
                Ok(path)
            }
        };
        let host_and_port = |need_host: bool| -> Result<(String, u16), String> {
            let port = url
                .port()
                .ok_or_else(|| format!("{text:?} needs a port (host:port)"))?;
            let host = if any_host {
                ""
            } else {
                url.host_str().unwrap_or_default()
            };
            if need_host && host.is_empty() {
                return Err(format!("{text:?} needs a host (host:port)"));
            }
            Ok((
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
            ))
        };
        let kind = match url.scheme() {
            "file" => {
                let flags: Vec<&str> = url.query().unwrap_or_default().split('&').collect();
                for flag in &flags {
                    if !matches!(*flag, "" | "realtime" | "loop") {
                        return Err(format!(
                            "{text:?}: unknown file option {flag:?} (known: realtime, loop)"
                        ));
                    }
                }
                UpstreamKind::File {
                    path: path()?,
                    realtime: flags.contains(&"realtime"),
                    looped: flags.contains(&"loop"),
                }
            }
            // The URL parser already insists on a host for these.
            "http" | "https" => UpstreamKind::Http(url.clone()),
            "tcp" => {
                let (host, port) = host_and_port(true)?;
                let address = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                UpstreamKind::Tcp { address }
            }
            "udp" => {
                let (host, port) = host_and_port(false)?;
                UpstreamKind::Udp { host, port }
            }
            "unix" => UpstreamKind::Unix { path: path()? },
            "unixpacket" => UpstreamKind::UnixPacket { path: path()? },
            "unixgram" => UpstreamKind::UnixGram { path: path()? },
            "fork" => {
                let args = match url.query() {
                    None | Some("") => Vec::new(),
                    Some(query) => query
                        .split('+')
                        .map(|arg| percent_decode_str(arg).decode_utf8_lossy().into_owned())
                        .collect(),
                };
                UpstreamKind::Fork {
                    program: path()?,
                    args,
                }
            }
            other => return Err(format!("unsupported scheme {other:?} in {text:?}")),
        };
        let mut shown = url;
        if shown.password().is_some() {
            let _ = shown.set_password(Some("xxxxx"));
        }
        Ok(Upstream {
            display: shown.to_string(),
            kind,
        })
    }

    /// Whether the source must pace this upstream by its PCR.
    pub fn realtime(&self) -> bool {
        matches!(self.kind, UpstreamKind::File { realtime: true, .. })
    }
}

/// The local path a `file:`, `unix:`… URL names, percent-decoded.
/// `scheme:///abs` and `scheme://host/abs` have the path after the
/// authority, and `file://relative/path` names a path relative to the
/// working directory (its first segment parses as a host).
pub fn url_path(url: &Url) -> PathBuf {
    let path = percent_decode_str(url.path()).decode_utf8_lossy();
    match url.host_str() {
        Some(host) if !host.is_empty() => PathBuf::from(format!("{host}{path}")),
        _ => PathBuf::from(path.as_ref()),
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> UpstreamKind {
        Upstream::parse(text).unwrap().kind
    }

    #[test]
    fn every_scheme_parses() {
        assert_eq!(
            kind("file:///srv/tv/sample.ts?realtime&loop"),
            UpstreamKind::File {
                path: "/srv/tv/sample.ts".into(),
                realtime: true,
                looped: true
            }
        );
        assert_eq!(
            kind("file:///tmp/fifo"),
            UpstreamKind::File {
                path: "/tmp/fifo".into(),
                realtime: false,
                looped: false
            }
        );
        assert!(matches!(
            kind("https://example.com/live.ts"),
            UpstreamKind::Http(_)
        ));
        assert_eq!(
            kind("tcp://192.0.2.1:5000"),
            UpstreamKind::Tcp {
                address: "192.0.2.1:5000".into()
            }
        );
        assert_eq!(
            kind("tcp://[::1]:5000"),
            UpstreamKind::Tcp {
                address: "[::1]:5000".into()
            }
        );
        assert_eq!(
            kind("udp://239.1.2.3:1234"),
            UpstreamKind::Udp {
                host: "239.1.2.3".into(),
                port: 1234
            }
        );
        assert_eq!(
            kind("udp://:1234"),
            UpstreamKind::Udp {
                host: "".into(),
                port: 1234
            }
        );
        assert_eq!(
            kind("unix:///run/tv.sock"),
            UpstreamKind::Unix {
                path: "/run/tv.sock".into()
            }
        );
        assert_eq!(
            kind("unixgram:///run/tv.sock"),
            UpstreamKind::UnixGram {
                path: "/run/tv.sock".into()
            }
        );
        assert_eq!(
            kind("unixpacket:///run/tv.sock"),
            UpstreamKind::UnixPacket {
                path: "/run/tv.sock".into()
            }
        );
        assert_eq!(
            kind("fork:///usr/bin/ffmpeg?-i+input%20file.ts+-f+mpegts+-"),
            UpstreamKind::Fork {
                program: "/usr/bin/ffmpeg".into(),
                args: vec![
                    "-i".into(),
                    "input file.ts".into(),
                    "-f".into(),
                    "mpegts".into(),
                    "-".into()
                ],
            }
        );
    }

    #[test]
    fn unusable_urls_say_why() {
        let error = |text: &str| Upstream::parse(text).unwrap_err();
        assert_eq!(
            error("rtmp://x/live"),
            "unsupported scheme \"rtmp\" in \"rtmp://x/live\""
        );
        assert_eq!(
            error("tcp://localhost"),
            "\"tcp://localhost\" needs a port (host:port)"
        );
        assert_eq!(
            error("tcp://:5000"),
            "\"tcp://:5000\" needs a host (host:port)"
        );
        assert!(error("not a url").starts_with("invalid URL \"not a url\""));
        assert!(error("file:///x.ts?realtim").contains("unknown file option \"realtim\""));
        assert!(error("http://").starts_with("invalid URL \"http://\": empty host"));
    }

    #[test]
    fn passwords_are_not_shown() {
        let upstream = Upstream::parse("https://user:secret@example.com/live.ts").unwrap();
        assert_eq!(
            upstream.to_string(),
            "https://user:xxxxx@example.com/live.ts"
        );
    }
}
