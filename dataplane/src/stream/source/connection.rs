//! Connections to upstreams, one variant per kind of socket or process.
//!
//! Every connection does one thing: append the next bytes it has to a
//! buffer ([`Connection::read`]). Byte streams (files, TCP, unix stream
//! sockets, HTTP bodies, a child's stdout) append what they read; datagram
//! sockets (UDP, unixgram, unixpacket) append one datagram, with an RTP
//! header removed when there is one.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::process::Stdio;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};
use tokio::process::{Child, Command};
use tracing::warn;

use super::{SourceError, SourceSettings};
use crate::config::{Upstream, UpstreamKind};
use crate::http_client::http_client;
use crate::stream::align::SYNC_BYTE;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An open connection to one upstream.
pub enum Connection {
    /// Any byte stream: TCP, unix stream socket.
    Stream(Pin<Box<dyn AsyncRead + Send>>),
    /// A file or FIFO; `looped` files start again at their end.
    File {
        file: BufReader<tokio::fs::File>,
        looped: bool,
    },
    /// An HTTP response body, and what is left of its last chunk.
    Http { body: ByteStream, rest: Bytes },
    /// UDP datagrams.
    Udp(UdpSocket),
    /// Unix datagrams, on a socket bound at the upstream's path.
    UnixGram(UnixDatagram),
    /// Unix sequenced packets (one datagram per read).
    UnixPacket(UnixStream),
    /// A child process's stdout. The child is killed when this is dropped.
    Fork {
        child: Child,
        stdout: tokio::process::ChildStdout,
    },
}

impl Connection {
    /// Opens a connection (without a timeout: the caller applies it).
    pub async fn open(
        upstream: &Upstream,
        settings: &SourceSettings,
    ) -> Result<Connection, SourceError> {
        Ok(match &upstream.kind {
            UpstreamKind::File { path, looped, .. } => {
                // Opening a FIFO waits for a writer: tokio does it off the runtime.
                let file = tokio::fs::File::open(path).await?;
                Connection::File {
                    file: BufReader::with_capacity(64 * 1024, file),
                    looped: *looped,
                }
            }
            UpstreamKind::Tcp { address } => {
                let stream = TcpStream::connect(address.as_str()).await?;
                Connection::Stream(Box::pin(stream))
            }
            UpstreamKind::Unix { path } => {
                Connection::Stream(Box::pin(UnixStream::connect(path).await?))
            }
            UpstreamKind::UnixPacket { path } => {
                let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
                socket.connect(&SockAddr::unix(path)?)?;
                socket.set_nonblocking(true)?;
                let stream =
                    std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(socket));
                Connection::UnixPacket(UnixStream::from_std(stream)?)
            }
            UpstreamKind::UnixGram { path } => {
                // A stale socket file from an earlier run would block the bind.
                if let Ok(metadata) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if metadata.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    }
                }
                let socket = UnixDatagram::bind(path)?;
                set_receive_buffer(&socket, settings.input_buffer_bytes);
                Connection::UnixGram(socket)
            }
            UpstreamKind::Udp { host, port } => {
                Connection::Udp(open_udp(host, *port, settings).await?)
            }
            UpstreamKind::Http(url) => {
                let client = http_client(Some(settings.connect_limit()))
                    .map_err(|e| SourceError::Http(error_chain(e)))?;
                // A server that accepts and never answers (or stalls in the
                // TLS handshake) must not hold the stream.
                let limit = settings.response_limit();
                let response = tokio::time::timeout(limit, client.get(url.clone()).send())
                    .await
                    .map_err(|_| SourceError::NoResponse(limit))?
                    .map_err(|e| SourceError::Http(error_chain(e)))?;
                if !response.status().is_success() {
                    return Err(SourceError::Http(format!(
                        "HTTP status {}",
                        response.status()
                    )));
                }
                Connection::Http {
                    body: Box::pin(response.bytes_stream()),
                    rest: Bytes::new(),
                }
            }
            UpstreamKind::Fork { program, args } => {
                let mut child = Command::new(program)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot run {}: {e}", program.display()))
                    })?;
                let stdout = child.stdout.take().expect("stdout is piped");
                if let Some(stderr) = child.stderr.take() {
                    let program = program.display().to_string();
                    tokio::spawn(async move {
                        let mut lines = BufReader::new(stderr).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            warn!(event = "upstream-stderr", program = %program, message = %line);
                        }
                    });
                }
                Connection::Fork { child, stdout }
            }
        })
    }

    /// At the end of a looped file: starts it again and says so (the
    /// stream jumps back, a discontinuity); `false` for anything else.
    pub async fn restart(&mut self) -> Result<bool, SourceError> {
        match self {
            Connection::File { file, looped: true } => {
                file.seek(io::SeekFrom::Start(0)).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Whether reads are whole datagrams received through a scratch buffer
    /// (so the caller's buffer needs no room reserved for them).
    pub fn is_datagram(&self) -> bool {
        matches!(self, Connection::Udp(_) | Connection::UnixGram(_))
    }

    /// Appends the next bytes (at most `limit`; a datagram whole) to `buf`;
    /// 0 means the upstream has ended (a looped file: see
    /// [`Connection::restart`]). Cancel-safe: nothing is lost if the future is
    /// dropped before it completes.
    pub async fn read(&mut self, buf: &mut BytesMut, limit: usize) -> Result<usize, SourceError> {
        let mut limited = buf.limit(limit);
        let n = match self {
            Connection::Stream(stream) => stream.read_buf(&mut limited).await?,
            Connection::Fork { stdout, .. } => stdout.read_buf(&mut limited).await?,
            Connection::File { file, .. } => file.read_buf(&mut limited).await?,
            Connection::Http { body, rest } => {
                if rest.is_empty() {
                    match body.next().await {
                        Some(Ok(chunk)) => *rest = chunk,
                        Some(Err(e)) => return Err(SourceError::Http(error_chain(e))),
                        None => return Ok(0),
                    }
                }
                let n = rest.len().min(limit);
                limited.put_slice(&rest.split_to(n));
                n
            }
            Connection::Udp(socket) => {
                let start = buf.len();
                loop {
                    socket.readable().await?;
                    if receive_datagram(buf, |scratch| socket.try_recv(scratch))? {
                        break;
                    }
                }
                return Ok(strip_rtp_header(buf, start));
            }
            Connection::UnixGram(socket) => {
                let start = buf.len();
                loop {
                    socket.readable().await?;
                    if receive_datagram(buf, |scratch| socket.try_recv(scratch))? {
                        break;
                    }
                }
                return Ok(strip_rtp_header(buf, start));
            }
            Connection::UnixPacket(socket) => {
                let n = socket.read_buf(&mut limited).await?;
                if n == 0 {
                    return Ok(0);
                }
                let start = buf.len() - n;
                return Ok(strip_rtp_header(buf, start).max(1));
            }
        };
        Ok(n)
    }
}

thread_local! {
    /// Room for the largest datagram, once per thread rather than once per
    /// stream: a stream's own buffer then only needs the datagram's size.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 65536]);
}

/// Receives one datagram with `receive` into the thread's scratch buffer and
/// appends it to `buf`; false when none was ready (try again when readable).
fn receive_datagram(
    buf: &mut BytesMut,
    receive: impl FnOnce(&mut [u8]) -> io::Result<usize>,
) -> io::Result<bool> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        match receive(&mut scratch) {
            Ok(n) => {
                buf.extend_from_slice(&scratch[..n]);
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(error) => Err(error),
        }
    })
}

/// What went wrong with an HTTP upstream, cause by cause ("error sending
/// request" alone says nothing): e.g. `error following redirect: too many
/// redirects`. Without the URL, which may hold credentials (the log line
/// names the upstream with its password hidden).
fn error_chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(error) = cause {
        let message = error.to_string();
        // hyper and reqwest wrap errors in layers that repeat the inner one.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = error.source();
    }
    text
}

/// Removes the RTP header of the datagram at `buf[start..]`, if it has one,
/// and returns how many bytes the datagram added (at least 1, so that an
/// empty datagram is not taken for the end of the stream).
fn strip_rtp_header(buf: &mut BytesMut, start: usize) -> usize {
    let datagram = &buf[start..];
    // A TS datagram starts with the sync byte; an RTP one with version 2.
    if datagram.len() >= 12 && datagram[0] != SYNC_BYTE && datagram[0] >> 6 == 2 {
        let csrc_count = (datagram[0] & 0x0f) as usize;
        let mut header = 12 + 4 * csrc_count;
        let has_extension = datagram[0] & 0x10 != 0;
        if has_extension && datagram.len() >= header + 4 {
            let words = u16::from_be_bytes([datagram[header + 2], datagram[header + 3]]) as usize;
            header += 4 + 4 * words;
        }
        let has_padding = datagram[0] & 0x20 != 0;
        let padding = if has_padding {
            *datagram.last().unwrap() as usize
        } else {
            0
        };
        let end = datagram.len().saturating_sub(padding);
        if header <= end {
            let payload = start + header..start + end;
            buf.copy_within(payload.clone(), start);
            buf.truncate(start + payload.len());
        }
    }
    (buf.len() - start).max(1)
}

/// Binds a UDP socket for `host:port`, joining the group if `host` is a
/// multicast address.
async fn open_udp(
    host: &str,
    port: u16,
    settings: &SourceSettings,
) -> Result<UdpSocket, SourceError> {
    let ip: IpAddr = if host.is_empty() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        match host.parse() {
            Ok(ip) => ip,
            Err(_) => tokio::net::lookup_host((host, port))
                .await?
                .next()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
                })?
                .ip(),
        }
    };
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(ip, port)),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    let _ = socket.set_recv_buffer_size(settings.input_buffer_bytes);
    let interface = interface_index(&settings.interface)?;
    match ip {
        IpAddr::V4(group) if group.is_multicast() => {
            socket.bind(&SocketAddr::new(ip, port).into())?;
            socket
                .join_multicast_v4_n(&group, &socket2::InterfaceIndexOrAddress::Index(interface))?;
        }
        IpAddr::V6(group) if group.is_multicast() => {
            socket.bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port).into())?;
            socket.join_multicast_v6(&group, interface)?;
        }
        _ => socket.bind(&SocketAddr::new(ip, port).into())?,
    }
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// The index of a network interface by name; 0 (any) for an empty name.
fn interface_index(name: &str) -> io::Result<u32> {
    if name.is_empty() {
        return Ok(0);
    }
    let c_name = std::ffi::CString::new(name).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL byte")
    })?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the whole call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named {name:?}"),
        ))
    } else {
        Ok(index)
    }
}

fn set_receive_buffer(socket: &UnixDatagram, bytes: usize) {
    let _ = socket2::SockRef::from(socket).set_recv_buffer_size(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_headers_are_removed_and_plain_ts_is_kept() {
        let ts = [SYNC_BYTE; 188];
        let mut buf = BytesMut::from(&b"old"[..]);
        buf.extend_from_slice(&ts);
        assert_eq!(strip_rtp_header(&mut buf, 3), 188);
        assert_eq!(&buf[3..], &ts[..]);

        // RTP v2, one CSRC, payload type 33 (MP2T).
        let mut rtp = vec![0x81, 33, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9, 9, 9];
        rtp.extend_from_slice(&ts);
        let mut buf = BytesMut::from(&rtp[..]);
        assert_eq!(strip_rtp_header(&mut buf, 0), 188);
        assert_eq!(&buf[..], &ts[..]);
    }
}
