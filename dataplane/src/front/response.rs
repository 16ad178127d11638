//! Response helpers shared by everything that answers a request: the body
//! type of every response, plain-text and typed answers, the empty body.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// The body of every response: a whole document, nothing, or a stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", body)
}

/// A response with a body of the given type.
pub fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed())
        .expect("static headers are valid")
}

pub fn empty() -> Body {
    Empty::new().boxed()
}
