//! The ConfigMap that carries an instance's data-plane config.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::meta::{config_map_name, object_meta, CONFIG_FILE};
use crate::crd::Restream;

/// The ConfigMap of `instance`, holding `json` (see [`super::config`]).
pub fn config_map(restream: &Restream, instance: &str, json: String) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(restream, config_map_name(instance), instance),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), json)])),
        ..ConfigMap::default()
    }
}
