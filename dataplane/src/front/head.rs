//! The first request of a plain HTTP/1 connection, looked at before hyper
//! takes the connection: a stream request that will be served is answered
//! here and its socket given to a writer shard (see
//! [`crate::front::shards`]); anything else is left where it is, unread, for
//! hyper to serve as usual.
//!
//! Only the simple case is taken: the whole head arrived in what the client
//! has sent so far, it parses, and nothing follows it (no body, no pipelined
//! request). Everything else, including malformed requests, goes to hyper,
//! which answers them as it always has.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The most of a request head looked at; longer heads go to hyper.
const MAX_HEAD: usize = 8 * 1024;
/// The most header lines looked at; more go to hyper.
const MAX_HEADERS: usize = 64;

/// A request head the client has sent in full, not yet read off its socket.
#[derive(Debug)]
pub struct Head {
    pub request: Request<()>,
    /// Its length on the wire, terminating blank line included.
    len: usize,
}

/// The head of the request waiting on `socket`, when it is there in full
/// with nothing after it, is a GET without a body, and parses.
pub async fn peek(socket: &TcpStream) -> Option<Head> {
    let mut buffer = vec![0u8; MAX_HEAD];
    let n = socket.peek(&mut buffer).await.ok()?;
    parse(&buffer[..n])
}

/// [`peek`]'s parsing, on the bytes peeked.
fn parse(bytes: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(bytes).ok()? else {
        return None;
    };
    if len != bytes.len() || parsed.method != Some("GET") {
        return None;
    }
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let uri: Uri = parsed.path?.parse().ok()?;
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        map.append(name, value);
    }
    // A body, or a request to change protocols: hyper's to handle.
    let has_body = map.contains_key(http::header::TRANSFER_ENCODING)
        || map
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if has_body || map.contains_key(http::header::UPGRADE) || map.contains_key(http::header::EXPECT)
    {
        return None;
    }
    let mut request = Request::new(());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Some(Head { request, len })
}

impl Head {
    /// Reads the head off `socket` (it is in the socket's buffer already).
    pub async fn consume(&self, socket: &mut TcpStream) -> std::io::Result<()> {
        let mut discard = vec![0u8; self.len];
        socket.read_exact(&mut discard).await.map(|_| ())
    }

    /// The body is framed in chunks: the client speaks HTTP/1.1.
    pub fn chunked(&self) -> bool {
        self.request.version() == Version::HTTP_11
    }

    /// The response head of a stream, as hyper writes it for the same
    /// request (header names in Go's case, `Connection: close` echoed).
    pub fn stream_response(&self) -> Bytes {
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut head = String::with_capacity(256);
        head.push_str(if self.chunked() {
            "HTTP/1.1 200 OK\r\n"
        } else {
            "HTTP/1.0 200 OK\r\n"
        });
        head.push_str("Content-Type: video/mpeg\r\n");
        head.push_str(&format!("Last-Modified: {now}\r\n"));
        head.push_str("Cache-Control: no-cache,no-store,no-transform\r\n");
        head.push_str("Accept-Ranges: none\r\n");
        let close = self
            .request
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("close"));
        if self.chunked() {
            if close {
                head.push_str("Connection: close\r\n");
            }
            head.push_str("Transfer-Encoding: chunked\r\n");
        }
        head.push_str(&format!("Date: {now}\r\n\r\n"));
        Bytes::from(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simple_get_is_taken_with_its_headers() {
        let bytes = b"GET /stream?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Basic eA==\r\n\r\n";
        let head = parse(bytes).unwrap();
        assert_eq!(head.request.uri().path(), "/stream");
        assert_eq!(head.request.uri().query(), Some("x=1"));
        assert_eq!(head.request.headers()["authorization"], "Basic eA==");
        assert!(head.chunked());
        assert_eq!(head.len, bytes.len());
    }

    #[test]
    fn anything_but_a_whole_bodiless_get_is_left_to_hyper() {
        for request in [
            &b"GET /stream HTTP/1.1\r\nHost: a\r\n"[..], // not all there yet
            b"HEAD /stream HTTP/1.1\r\n\r\n",
            b"POST /stream HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            b"GET /stream HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"GET /stream HTTP/1.1\r\n\r\nGET /other HTTP/1.1\r\n\r\n", // pipelined
            b"GET /stream HTTP/1.1\r\nBad Header\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01", // TLS on the plain port
        ] {
            assert!(
                parse(request).is_none(),
                "{:?}",
                String::from_utf8_lossy(request)
            );
        }
    }

    /// The same as hyper's, byte for byte but the dates, is held end to end
    /// by `tests/shards.rs` `a_shard_answers_with_the_head_hyper_writes`.
    #[test]
    fn the_response_head_is_what_hyper_writes() {
        let head = parse(b"GET /s HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").unwrap();
        let text = String::from_utf8(head.stream_response().to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: video/mpeg\r\nLast-Modified: "));
        assert!(text.contains(
            "\r\nCache-Control: no-cache,no-store,no-transform\r\nAccept-Ranges: none\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nDate: "
        ));
        assert!(text.ends_with(" GMT\r\n\r\n"));
        let head = parse(b"GET /s HTTP/1.0\r\n\r\n").unwrap();
        let text = String::from_utf8(head.stream_response().to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(!text.contains("Transfer-Encoding"));
        assert!(!head.chunked());
    }
}
