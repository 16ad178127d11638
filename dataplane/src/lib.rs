//! `restreamer`: a live MPEG-TS streaming proxy.
//!
//! One upstream transport stream per channel is fetched once, cut into
//! packets, and fanned out unchanged and in real time to many HTTP clients.
//! The crate is laid out as the program works, one folder per part; the
//! dependencies point one way, from the HTTP front to the core and down the
//! data path:
//!
//! - [`config`]: the `restreamer.json` format and its validation into
//!   typed, parsed values (upstream URLs, static sources, API targets,
//!   listen addresses, credentials);
//! - [`stream`]: the data path of one stream, top to bottom: `source`
//!   (connect, failover, pacing) → `align` (188-byte packets) → `inspect`
//!   (tables, random access points, health) → `hub` (the shared ring every
//!   client reads from, with `instant` start);
//! - [`proxy`]: the running proxy: the current generation built from a
//!   config, reload, connection limits, metrics, notifications, static
//!   documents, logging;
//! - [`front`]: the HTTP front: the server's lifecycle, serving and
//!   routing requests, stream clients, the built-in APIs, static resources.
//!
//! Each folder may use only those below it: `front` → `proxy` → `stream`,
//! and `config` under all of them (`tests/layout.rs` checks it). Beside
//! them, [`http_client`] holds the shared outgoing HTTP clients, which all
//! may use.

pub mod config;
pub mod front;
pub mod http_client;
pub mod proxy;
pub mod stream;
