//! The HTTP front: everything that answers a request.
//!
//! - [`server`] binds the listen addresses, serves until shutdown and
//!   drains;
//! - [`serve`] accepts connections, routes each request by its path and
//!   serves stream clients from their stream's hub;
//! - [`head`] looks at a plain HTTP/1 connection's first request, so that a
//!   stream client can be answered without hyper, and [`shards`] (the
//!   writer shards) then write the stream to many such clients per task;
//! - [`stream_client`] is a connected stream client however it is served;
//! - [`api`] answers the built-in APIs (health, statistics, check, control,
//!   Prometheus metrics) and the probes;
//! - [`static_files`] answers for `static` resources (local files and
//!   remote documents, conditional requests);
//! - [`routing`] finds a request's route as Go's `ServeMux` does;
//! - [`connection`] holds the time limits of client connections;
//! - [`response`] holds the response helpers all of them use;
//! - [`client`] tells the client's address (`trustedproxies`);
//! - [`tls`] serves the same over HTTPS (`tlslisten`) and takes up a
//!   renewed certificate without a restart.
//!
//! The front is the top of the crate: it may use the running proxy
//! ([`crate::proxy`]), the streams' hubs ([`crate::stream`]) and the config
//! ([`crate::config`]); nothing below uses it.

pub mod api;
pub mod client;
pub mod connection;
pub mod head;
pub mod response;
pub mod routing;
pub mod serve;
pub mod server;
pub mod shards;
pub mod static_files;
pub mod stream_client;
pub mod tls;
