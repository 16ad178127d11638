//! The HTTP front: everything that answers a request.
//!
//! - [`serve`] accepts connections, routes each request by its path and
//!   serves stream clients from their stream's hub;
//! - [`api`] answers the built-in APIs (health, statistics, check, control,
//!   Prometheus metrics) and the probes;
//! - [`static_files`] serves `static` resources (local files and remote
//!   documents);
//! - [`auth`] checks credentials (basic and bearer).
//!
//! The front reads the running proxy ([`crate::proxy`]) and the streams'
//! hubs ([`crate::stream`]).

pub mod api;
pub mod auth;
pub mod serve;
pub mod static_files;
