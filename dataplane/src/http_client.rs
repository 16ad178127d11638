//! The process's outgoing HTTP clients: upstreams, remote static documents
//! and notifications share their connection pools and TLS setup. One client
//! is built per connect timeout (there are one or two: the config's
//! `timeout` or the sources' default, and none); every other timeout is set
//! per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The shared client with this connect timeout (`None`: the system's).
pub fn http_client(connect_timeout: Option<Duration>) -> reqwest::Result<reqwest::Client> {
    static CLIENTS: Mutex<Option<HashMap<Option<Duration>, reqwest::Client>>> = Mutex::new(None);
    let mut clients = CLIENTS.lock().unwrap();
    let clients = clients.get_or_insert_with(HashMap::new);
    if let Some(client) = clients.get(&connect_timeout) {
        return Ok(client.clone());
    }
    let mut builder =
        reqwest::Client::builder().user_agent(concat!("restreamer/", env!("CARGO_PKG_VERSION")));
    if let Some(limit) = connect_timeout {
        builder = builder.connect_timeout(limit);
    }
    let client = builder.build()?;
    clients.insert(connect_timeout, client.clone());
    Ok(client)
}
