//! `restreamer-operator`: the Kubernetes controller for `Restream`
//! resources. Dependencies point one way: `render` and `status` use `crd`;
//! `controller` uses all three and `metrics`; `main` wires `controller`,
//! `leader` and `metrics`; `plan` stands alone; `fixtures` (tests only)
//! builds on `controller`.
//!
//! - [`crd`]: the resource, its schema and validation;
//! - [`render`]: a Restream to the objects that run it (pure), one builder
//!   per object;
//! - [`status`]: the Restream's status and conditions from what a
//!   reconcile saw (pure);
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
pub mod status;

#[cfg(test)]
mod fixtures;
