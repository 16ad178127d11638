//! A Restream's status from what a reconcile saw: pure, so that each
//! condition's rule is tested on its own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{Restream, RestreamStatus};

/// What a reconcile saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Nothing was applied: the spec cannot work (`reason`, `message`).
    Refused { reason: String, message: String },
    /// Everything was applied.
    Applied(Applied),
}

/// The Deployment as the API server reports it after the apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub replicas: i32,
    pub ready: i32,
    /// Pods of the current pod template.
    pub updated: i32,
    /// The Deployment controller has seen the latest spec.
    pub observed_latest: bool,
    /// What the autoscaler wants, when the operator's HPA runs.
    pub desired: Option<i32>,
    pub config_hash: String,
}

/// The status to report. Each condition keeps its transition time while
/// its status is unchanged, and takes `now` when it flips.
pub fn status(restream: &Restream, observed: &Observed, now: Time) -> RestreamStatus {
    let condition = |type_: &str, status: bool, reason: &str, message: &str| {
        let status = if status { "True" } else { "False" };
        let previous = restream
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: restream.metadata.generation,
            last_transition_time: match previous {
                Some(previous) if previous.status == status => {
                    previous.last_transition_time.clone()
                }
                _ => now.clone(),
            },
        }
    };
    let base = RestreamStatus {
        observed_generation: restream.metadata.generation,
        streams: restream.spec.streams.len() as i32,
        ..RestreamStatus::default()
    };
    match observed {
        Observed::Refused { reason, message } => RestreamStatus {
            conditions: vec![
                condition("Ready", false, reason, message),
                condition("Progressing", false, reason, "nothing applied"),
                condition("Degraded", true, reason, message),
            ],
            ..base
        },
        Observed::Applied(Applied {
            replicas,
            ready,
            updated,
            observed_latest,
            desired,
            config_hash,
        }) => {
            let ready_condition = if *ready > 0 {
                condition(
                    "Ready",
                    true,
                    "PodsReady",
                    &format!("{ready} of {replicas} pods ready"),
                )
            } else {
                condition(
                    "Ready",
                    false,
                    "NoPodReady",
                    "no data-plane pod is ready yet",
                )
            };
            let progressing = if updated < replicas || !observed_latest {
                condition("Progressing", true, "RollingOut", "pods are being updated")
            } else if desired.is_some_and(|desired| desired != *replicas) {
                condition(
                    "Progressing",
                    true,
                    "Scaling",
                    &format!("scaling from {replicas} to {} pods", desired.unwrap_or(0)),
                )
            } else {
                condition("Progressing", false, "Applied", "all objects applied")
            };
            RestreamStatus {
                conditions: vec![
                    ready_condition,
                    progressing,
                    condition("Degraded", false, "Applied", "all objects applied"),
                ],
                replicas: *replicas,
                ready_replicas: *ready,
                desired_replicas: *desired,
                config_hash: Some(config_hash.clone()),
                ..base
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::chrono::{TimeZone, Utc};

    fn at(second: u32) -> Time {
        Time(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap())
    }

    fn applied(replicas: i32, ready: i32, updated: i32) -> Applied {
        Applied {
            replicas,
            ready,
            updated,
            observed_latest: true,
            desired: Some(replicas),
            config_hash: "abc".into(),
        }
    }

    fn get<'a>(status: &'a RestreamStatus, type_: &str) -> (&'a str, &'a str, &'a Time) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (&c.status, &c.reason, &c.last_transition_time)
    }

    #[test]
    fn pods_ready_make_the_restream_ready_and_report_counts() {
        let status = status(
            &Restream::test(),
            &Observed::Applied(applied(3, 2, 3)),
            at(0),
        );
        assert_eq!(get(&status, "Ready").0, "True");
        assert_eq!(get(&status, "Ready").1, "PodsReady");
        assert_eq!(status.conditions[0].message, "2 of 3 pods ready");
        assert_eq!(get(&status, "Progressing").0, "False");
        assert_eq!(get(&status, "Degraded").0, "False");
        assert_eq!(
            (status.streams, status.replicas, status.ready_replicas),
            (2, 3, 2)
        );
        assert_eq!(status.desired_replicas, Some(3));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.config_hash.as_deref(), Some("abc"));
    }

    #[test]
    fn no_ready_pod_is_not_ready() {
        let status = status(
            &Restream::test(),
            &Observed::Applied(applied(2, 0, 2)),
            at(0),
        );
        assert_eq!(get(&status, "Ready").0, "False");
        assert_eq!(get(&status, "Ready").1, "NoPodReady");
    }

    #[test]
    fn a_rollout_or_a_pending_scale_is_progressing() {
        let rolling = status(
            &Restream::test(),
            &Observed::Applied(applied(3, 3, 1)),
            at(0),
        );
        assert_eq!(get(&rolling, "Progressing").0, "True");
        assert_eq!(get(&rolling, "Progressing").1, "RollingOut");
        let unseen = Observed::Applied(Applied {
            observed_latest: false,
            ..applied(3, 3, 3)
        });
        let unseen = status(&Restream::test(), &unseen, at(0));
        assert_eq!(get(&unseen, "Progressing").1, "RollingOut");
        let scaling = Observed::Applied(Applied {
            desired: Some(5),
            ..applied(3, 3, 3)
        });
        let scaling = status(&Restream::test(), &scaling, at(0));
        assert_eq!(get(&scaling, "Progressing").1, "Scaling");
        assert_eq!(scaling.conditions[1].message, "scaling from 3 to 5 pods");
    }

    #[test]
    fn a_refused_spec_is_degraded_and_not_ready() {
        let refused = Observed::Refused {
            reason: "InvalidSpec".into(),
            message: "spec.streams[0].path: bad".into(),
        };
        let status = status(&Restream::test(), &refused, at(0));
        assert_eq!(get(&status, "Degraded"), ("True", "InvalidSpec", &at(0)));
        assert_eq!(get(&status, "Ready").0, "False");
        assert_eq!(status.conditions[0].message, "spec.streams[0].path: bad");
        assert_eq!(status.config_hash, None);
        assert_eq!(status.replicas, 0);
    }

    #[test]
    fn a_transition_time_moves_only_when_the_condition_flips() {
        let mut restream = Restream::test();
        restream.status = Some(status(
            &restream,
            &Observed::Applied(applied(2, 2, 2)),
            at(0),
        ));
        let again = status(&restream, &Observed::Applied(applied(2, 1, 2)), at(30));
        assert_eq!(get(&again, "Ready").2, &at(0), "still ready");
        restream.status = Some(again);
        let down = status(&restream, &Observed::Applied(applied(2, 0, 2)), at(40));
        assert_eq!(get(&down, "Ready").2, &at(40), "ready flipped to not ready");
        assert_eq!(get(&down, "Degraded").2, &at(0));
    }
}
