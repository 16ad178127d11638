//! The data-plane config of a Restream: built with the data plane's own
//! config types and checked by its own validation, so the two cannot
//! drift. The edges' config (each channel from the origins, with tiers)
//! and the origins' (the real upstreams, no limits) differ only in what
//! [`config_with`] is told.

use restreamer::config::{
    ApiKind, AuthType, Authentication, Config, Notification, Resource as DataResource,
    ResourceType, User,
};

use super::error::RenderError;
use super::meta::{origin_url, ADMIN_PORT, HTTPS_PORT, HTTP_PORT, SECRET_DIR, TLS_DIR};
use crate::crd::{
    AuthenticationKind, Restream, StreamSpec, CHECK_PREFIX, CONTROL_PREFIX, HEALTH_PATH,
    STATISTICS_PATH,
};

/// The data-plane config of a Restream's serving pods: with tiers, each
/// channel's upstreams are the origins.
pub fn data_plane_config(restream: &Restream) -> Config {
    let upstreams = |stream: &StreamSpec| match &restream.spec.tiers {
        Some(tiers) => (0..tiers.origins)
            .map(|i| origin_url(restream, i, &stream.path))
            .collect(),
        None => stream.upstreams.clone(),
    };
    config_with(restream, &upstreams, false)
}

/// The data-plane config of the origin pods: the real upstreams, no
/// connection limits (their clients are the edges), open streams.
pub fn origin_config(restream: &Restream) -> Config {
    config_with(restream, &|stream| stream.upstreams.clone(), true)
}

fn config_with(
    restream: &Restream,
    upstreams_of: &dyn Fn(&StreamSpec) -> Vec<String>,
    origin: bool,
) -> Config {
    let spec = &restream.spec;
    let tls = spec.tls.as_ref().filter(|_| !origin);
    let auth = spec.authentication.as_ref().map(|auth| Authentication {
        kind: match auth.kind {
            AuthenticationKind::Basic => AuthType::Basic,
            AuthenticationKind::Bearer => AuthType::Bearer,
            AuthenticationKind::Token => AuthType::Token,
        },
        realm: auth.realm.clone(),
        users: auth.users.clone(),
        ..Authentication::default()
    });
    let api_auth = auth.clone().unwrap_or_default();
    let stream_auth = match &spec.authentication {
        Some(settings) if settings.streams && !origin => api_auth.clone(),
        _ => Authentication::default(),
    };

    let mut resources = Vec::new();
    for stream in &spec.streams {
        let mut upstreams = upstreams_of(stream);
        resources.push(DataResource {
            kind: ResourceType::Stream,
            serve: stream.path.clone(),
            remote: upstreams.remove(0),
            remotes: upstreams,
            clientinterface: stream.multicast_interface.clone().unwrap_or_default(),
            instantstart: stream.instant_start,
            contenttimeout: stream.content_timeout_seconds.map(u64::from),
            ccerrorlimit: stream.cc_error_limit.map(u64::from),
            authentication: stream_auth.clone(),
            ..DataResource::default()
        });
    }
    let api = |kind: ApiKind, serve: String, remote: String, authentication: Authentication| {
        DataResource {
            kind: ResourceType::Api,
            serve,
            remote,
            api: Some(kind),
            authentication,
            ..DataResource::default()
        }
    };
    if spec.apis.health {
        resources.push(api(
            ApiKind::Health,
            HEALTH_PATH.into(),
            String::new(),
            Authentication::default(),
        ));
    }
    if spec.apis.statistics {
        resources.push(api(
            ApiKind::Statistics,
            STATISTICS_PATH.into(),
            String::new(),
            api_auth.clone(),
        ));
    }
    for stream in &spec.streams {
        if spec.apis.check {
            let serve = format!("{CHECK_PREFIX}{}", stream.name);
            resources.push(api(
                ApiKind::Check,
                serve,
                stream.path.clone(),
                Authentication::default(),
            ));
        }
        if spec.apis.control {
            let serve = format!("{CONTROL_PREFIX}{}", stream.name);
            resources.push(api(
                ApiKind::Control,
                serve,
                stream.path.clone(),
                api_auth.clone(),
            ));
        }
    }

    Config {
        listen: format!(":{HTTP_PORT}"),
        adminlisten: format!(":{ADMIN_PORT}"),
        timeout: u64::from(spec.upstream.connect_timeout_seconds),
        readtimeout: u64::from(spec.upstream.read_timeout_seconds),
        reconnect: u64::from(spec.upstream.reconnect_seconds),
        instantstart: spec.instant_start.enabled,
        instantstartlimit: u64::from(spec.instant_start.limit_mebibytes),
        contenttimeout: u64::from(spec.upstream.content_timeout_seconds),
        ccerrorlimit: u64::from(spec.upstream.cc_error_limit),
        inputbuffer: spec.buffers.input_packets as usize,
        outputbuffer: spec.buffers.output_packets as usize,
        flushms: u64::from(spec.buffers.flush_milliseconds),
        fullconnections: if origin {
            0
        } else {
            spec.limits.soft_connections as usize
        },
        maxconnections: if origin {
            0
        } else {
            spec.limits.max_connections as usize
        },
        draintime: u64::from(spec.pods.drain_seconds),
        // Origins too: an edge that stalls is cut, and fails over.
        stalltimeout: spec
            .limits
            .stall_timeout_seconds
            .map_or(Config::default().stalltimeout, u64::from),
        // Viewers reach the edges only: the origins' clients are edges,
        // over plain HTTP inside the cluster.
        tlslisten: tls.map(|_| format!(":{HTTPS_PORT}")).unwrap_or_default(),
        tlscert: tls
            .map(|_| format!("{TLS_DIR}/tls.crt"))
            .unwrap_or_default(),
        tlskey: tls
            .map(|_| format!("{TLS_DIR}/tls.key"))
            .unwrap_or_default(),
        maxperclient: if origin {
            0
        } else {
            spec.limits.max_connections_per_client as usize
        },
        trustedproxies: if origin {
            Vec::new()
        } else {
            spec.service
                .trusted_proxies
                .iter()
                .filter_map(|proxy| proxy.parse().ok())
                .collect()
        },
        userfile: spec
            .authentication
            .as_ref()
            .map(|auth| format!("{SECRET_DIR}/{}", auth.secret_key))
            .unwrap_or_default(),
        resources,
        notifications: spec
            .notifications
            .iter()
            .map(|n| Notification {
                event: n.event.as_str().into(),
                kind: "url".into(),
                url: n.url.clone(),
                ..Notification::default()
            })
            .collect(),
        ..Config::default()
    }
}

/// The most a ConfigMap holds (1 MiB), less room for its metadata.
const MAX_CONFIG_BYTES: usize = 1_000_000;

/// The config as the ConfigMap carries it, after the data plane's own
/// checks: what it would refuse to load, we refuse to render. The users
/// live in a Secret the pods mount, so the check stands placeholders in for
/// them. A config too large for a ConfigMap is refused too.
pub fn checked_json(restream: &Restream, config: &Config) -> Result<String, RenderError> {
    let mut check = config.clone();
    check.userfile.clear();
    for user in restream
        .spec
        .authentication
        .iter()
        .flat_map(|auth| &auth.users)
    {
        check.userlist.insert(user.clone(), User::default());
    }
    check
        .validate()
        .map_err(|e| RenderError::InvalidConfig(e.to_string().replace('\n', "; ")))?;
    let json = serde_json::to_string_pretty(config).expect("a config serialises");
    if json.len() > MAX_CONFIG_BYTES {
        return Err(RenderError::InvalidConfig(format!(
            "the data-plane config is {} bytes, over the {MAX_CONFIG_BYTES} a ConfigMap can hold: \
             fewer streams or origins",
            json.len()
        )));
    }
    Ok(json)
}
