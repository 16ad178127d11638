//! The `restreamer.json` parser on arbitrary text.
//!
//! It must never panic, and a config it accepts must come back unchanged
//! through serialisation: the operator renders configs with the same types,
//! so what it writes is what the data plane reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use restreamer::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    if !config.userfile.is_empty() {
        // Its users came from a file; written back they would be doubled.
        return;
    }
    let written = serde_json::to_string(&config).expect("a parsed config serialises");
    match Config::parse(&written) {
        Ok(again) => assert!(again == config, "the config changed on its way back: {written}"),
        Err(error) => panic!("a config we wrote is rejected: {error}\n{written}"),
    }
});
