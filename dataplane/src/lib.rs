//! `restreamer`: a live MPEG-TS streaming proxy.
//!
//! One upstream transport stream per channel is fetched once, cut into
//! packets, and fanned out unchanged and in real time to many HTTP clients.
//! The data path, top to bottom:
//!
//! - [`source`]: connects to a stream's upstreams (files, HTTP, TCP, unix
//!   sockets, UDP, a command's output), with failover and reconnects;
//! - [`align`]: cuts what it reads into 188-byte packets;
//! - [`hub`]: holds the recent packets once and gives every client its own
//!   bounded queue (a cursor), dropping for clients that fall behind;
//! - [`serve`]: answers HTTP requests; a stream client's response body reads
//!   from its queue and hyper writes it to the socket.
//!
//! Around it: [`config`] (the `restreamer.json` format), [`proxy`] (the
//! running state, rebuilt on reload), [`reload`] (watching the config),
//! [`limit`] (soft and hard connection limits), [`auth`], [`api`] (the
//! built-in APIs and probes), [`static_files`], [`metrics`] (statistics and
//! Prometheus), [`notifications`] and [`logging`].

pub mod align;
pub mod api;
pub mod auth;
pub mod config;
pub mod hub;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod notifications;
pub mod proxy;
pub mod reload;
pub mod serve;
pub mod source;
pub mod static_files;
