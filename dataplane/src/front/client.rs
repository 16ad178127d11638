//! Who the client is: its address, for `maxperclient`, for tokens bound to
//! an address, and for the access log.
//!
//! It is the peer's address, unless the peer is one of `trustedproxies`
//! (an ingress, a load balancer): then the `Forwarded` header (RFC 7239,
//! its `for=`), or else `X-Forwarded-For`, names it. Those headers list the
//! hops nearest last; the client is the last hop that is not itself a
//! trusted proxy, so a client cannot pose as another by sending the header
//! itself (its forged entries are to the left of what the trusted proxy
//! appends). From any other peer these headers are ignored, always.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use http::header::{HeaderMap, FORWARDED};

use crate::config::Cidr;

/// The client address of a request from `peer` with `headers`.
pub fn address(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.ip().to_canonical();
    let is_trusted = |address: IpAddr| trusted.iter().any(|range| range.contains(address));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = if headers.contains_key(FORWARDED) {
        headers
            .get_all(FORWARDED)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|element| {
                let node = element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(name, _)| name.eq_ignore_ascii_case("for"))
                    .map(|(_, node)| node);
                node.and_then(parse_node)
            })
            .collect()
    } else {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(parse_node)
            .collect()
    };
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        // An entry that names no address (`unknown`, an obfuscated name,
        // garbage) ends the chain: what is left of it cannot be trusted.
        let Some(hop) = hop else { break };
        client = hop;
        if !is_trusted(hop) {
            break;
        }
    }
    client
}

/// An address as a forwarding header writes it: `192.0.2.1`,
/// `"192.0.2.1:4711"`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse::<IpAddr>().ok();
    }
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    node.parse::<SocketAddrV4>()
        .ok()
        .map(|address| IpAddr::V4(*address.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn trusted() -> Vec<Cidr> {
        vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]
    }

    fn from(peer: &str, pairs: &[(&str, &str)]) -> String {
        address(peer.parse().unwrap(), &headers(pairs), &trusted()).to_string()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        assert_eq!(
            from("192.0.2.9:5000", &[("x-forwarded-for", "198.51.100.1")]),
            "192.0.2.9"
        );
        assert_eq!(
            from("192.0.2.9:5000", &[("forwarded", "for=198.51.100.1")]),
            "192.0.2.9"
        );
        assert_eq!(
            address(
                "192.0.2.9:1".parse().unwrap(),
                &headers(&[("x-forwarded-for", "198.51.100.1")]),
                &[]
            )
            .to_string(),
            "192.0.2.9"
        );
    }

    #[test]
    fn a_trusted_peer_names_the_client() {
        assert_eq!(
            from("10.1.2.3:5000", &[("x-forwarded-for", "198.51.100.1")]),
            "198.51.100.1"
        );
        assert_eq!(
            from(
                "[::ffff:10.1.2.3]:5000",
                &[("x-forwarded-for", "198.51.100.1")]
            ),
            "198.51.100.1"
        );
        assert_eq!(
            from(
                "[::1]:5000",
                &[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")]
            ),
            "2001:db8::7"
        );
        // Forwarded wins over X-Forwarded-For.
        assert_eq!(
            from(
                "10.0.0.1:1",
                &[
                    ("forwarded", "for=198.51.100.2"),
                    ("x-forwarded-for", "198.51.100.1")
                ]
            ),
            "198.51.100.2"
        );
        assert_eq!(from("10.0.0.1:1", &[]), "10.0.0.1");
    }

    #[test]
    fn a_forged_entry_left_of_the_real_one_is_not_believed() {
        // The client sent "X-Forwarded-For: 203.0.113.66"; the ingress
        // (10.0.0.1) appended the address it saw, 198.51.100.1, and an inner
        // proxy (10.0.0.2) appended the ingress.
        assert_eq!(
            from(
                "10.0.0.2:1",
                &[("x-forwarded-for", "203.0.113.66, 198.51.100.1, 10.0.0.1")]
            ),
            "198.51.100.1"
        );
        assert_eq!(
            from(
                "10.0.0.2:1",
                &[
                    ("x-forwarded-for", "203.0.113.66"),
                    ("x-forwarded-for", "198.51.100.1:80")
                ]
            ),
            "198.51.100.1"
        );
        assert_eq!(
            from("10.0.0.2:1", &[("forwarded", "for=unknown, for=10.0.0.1")]),
            "10.0.0.1"
        );
    }
}
