//! Restream to data-plane config, on arbitrary specs.
//!
//! The input is a Restream `spec` as JSON. Rendering must never panic;
//! it must succeed exactly when the spec passes the same validation as the
//! CRD; and the config it puts in the ConfigMap must read back as the
//! config it rendered: a Restream the API server accepts never leaves
//! pods that reject their config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use restreamer::config::Config;
use restreamer_operator::crd::{Restream, RestreamSpec};
use restreamer_operator::render::{data_plane_config, render};

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<RestreamSpec>(data) else {
        return;
    };
    let mut restream = Restream::new("fuzz", spec);
    restream.metadata.namespace = Some("default".into());
    let valid = restream.spec.validate();
    match (render(&restream, "restreamer:fuzz"), valid) {
        (Ok(rendered), Ok(())) => {
            let json = &rendered.config_map.data.as_ref().expect("config map data")["restreamer.json"];
            let config: Config = serde_json::from_str(json).expect("the rendered config reads back");
            assert!(config == data_plane_config(&restream), "the rendered config changed on reading");
        }
        (Err(error), Ok(())) => panic!("a valid spec failed to render: {error}"),
        (Ok(_), Err(problems)) => panic!("an invalid spec rendered: {problems}"),
        (Err(_), Err(_)) => {}
    }
});
