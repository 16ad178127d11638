//! The data path of one stream, in the order the bytes travel:
//!
//! - [`source`] connects to the stream's upstreams (files, HTTP, TCP, unix
//!   sockets, UDP, a command's output), with failover and reconnects, and
//!   paces files in real time;
//! - [`align`] cuts what it reads into 188-byte packets;
//! - [`inspect`] reads each packet's header once: tables, programs, random
//!   access points (the hub calls it on every run it publishes);
//! - [`instant`]: where in the hub's ring a new client starts (the latest
//!   random access point) and where a client that fell behind resumes;
//! - [`hub`] holds the recent packets once and gives every client its own
//!   bounded queue (a cursor), dropping for clients that fall behind.
//!
//! Nothing here knows about HTTP; the [`crate::front`] reads from the hub.
//! This folder may use the config ([`crate::config`]) and the shared HTTP
//! clients ([`crate::http_client`]), nothing else of the crate.

pub mod align;
pub mod hub;
pub mod inspect;
pub mod instant;
pub mod source;
