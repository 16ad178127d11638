//! Address ranges in the config (`trustedproxies`): `10.0.0.0/8`,
//! `2001:db8::/32`, or a single address (`192.0.2.7`, a /32 or /128).
//!
//! Parsed when the config is read, so a typo is an error naming the key
//! (`trustedproxies[1]: "10.0.0/8" is not an address or CIDR`) and the
//! request path only compares numbers.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A range of addresses; written as in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// Whether `address` is in the range. An IPv4 address seen as
    /// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, as a dual-stack socket reports
    /// it) is compared as IPv4.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(&address.to_canonical())
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        match text.parse::<IpAddr>() {
            Ok(address) => Ok(Cidr(IpNet::from(address.to_canonical()))),
            Err(_) => Err(format!("{text:?} is not an address or CIDR")),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_single_addresses() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert_eq!(
            "10.0.0/8".parse::<Cidr>().unwrap_err(),
            "\"10.0.0/8\" is not an address or CIDR"
        );
    }
}
