//! `restreamer-operator`: the Kubernetes controller for `Restream`
//! resources.
//!
//! - [`crd`]: the resource, its schema and validation;
//! - [`render`]: a Restream to the objects that run it (pure);
//! - [`controller`]: the `Context`, `reconcile` and `error_policy`;
//! - [`leader`]: leader election on a Lease;
//! - [`metrics`]: the operator's own metrics;
//! - [`plan`]: capacity planning (`restreamer-operator plan`).

pub mod controller;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod render;

#[cfg(test)]
mod fixtures;
