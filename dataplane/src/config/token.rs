//! Signed URLs (authentication `"type": "token"`): links that a portal
//! hands out and that cannot be changed, reused after they expire, or
//! (optionally) used from another address.
//!
//! A signed URL is the resource's path with three query parameters:
//!
//! ```text
//! /live/news.ts?expires=1767225600&client=203.0.113.5&signature=9f86d0…
//! ```
//!
//! - `expires`: Unix time (seconds) after which the link is refused;
//! - `client` (optional): the only client address the link works from;
//! - `signature`: lowercase hex of HMAC-SHA256, keyed with the password of
//!   one of the resource's `users`, over
//!   `PATH "\n" EXPIRES "\n" CLIENT` (CLIENT empty when there is none),
//!   where PATH is the decoded path the resource is served at.
//!
//! In shell: `printf '%s\n%s\n%s' "$path" "$expires" "$client" | openssl
//! dgst -sha256 -hmac "$key" -r | cut -d' ' -f1`.
//!
//! Every key of the resource is tried and every comparison is made, in
//! constant time, whatever the outcome, so timing tells nothing about the
//! signature or the user. Other query parameters are allowed (players add
//! their own) and are not signed; the three above are taken out of the
//! request before it is answered.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The query parameters of a signed URL.
pub const EXPIRES: &str = "expires";
pub const CLIENT: &str = "client";
pub const SIGNATURE: &str = "signature";

/// Why a request's token was refused (logged; not sent to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `expires` or `signature`, a parameter twice, or a value that
    /// does not parse.
    Malformed,
    /// No key of the resource made this signature.
    BadSignature,
    /// Signed for another client address.
    OtherClient,
    Expired,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "missing or malformed token",
            Refusal::BadSignature => "wrong signature",
            Refusal::OtherClient => "token signed for another client address",
            Refusal::Expired => "expired token",
        }
    }
}

/// The signature of `path` until `expires`, for `client` if given: lowercase
/// hex.
pub fn signature(key: &[u8], path: &str, expires: u64, client: Option<IpAddr>) -> String {
    let client = client
        .map(|c| c.to_canonical().to_string())
        .unwrap_or_default();
    mac(key, path, &expires.to_string(), &client)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The query string of a signed URL (without the `?`).
pub fn signed_query(key: &[u8], path: &str, expires: u64, client: Option<IpAddr>) -> String {
    let signature = signature(key, path, expires, client);
    match client {
        Some(client) => format!(
            "{EXPIRES}={expires}&{CLIENT}={}&{SIGNATURE}={signature}",
            client.to_canonical()
        ),
        None => format!("{EXPIRES}={expires}&{SIGNATURE}={signature}"),
    }
}

fn mac(key: &[u8], path: &str, expires: &str, client: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(expires.as_bytes());
    mac.update(b"\n");
    mac.update(client.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Checks the token in `query` for a request of `path` from `client` at
/// Unix time `now`, against every key in `keys`.
pub fn verify(
    keys: &[Vec<u8>],
    path: &str,
    query: Option<&str>,
    client: IpAddr,
    now: u64,
) -> Result<(), Refusal> {
    let token = Token::parse(query.unwrap_or("")).ok_or(Refusal::Malformed)?;
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        let expected = mac(key, path, &token.expires_text, &token.client_text);
        matched |= expected.ct_eq(&token.signature);
    }
    if !bool::from(matched) {
        return Err(Refusal::BadSignature);
    }
    if let Some(signed_for) = token.client {
        if signed_for != client.to_canonical() {
            return Err(Refusal::OtherClient);
        }
    }
    if now >= token.expires {
        return Err(Refusal::Expired);
    }
    Ok(())
}

/// `query` without the token's parameters; `None` if nothing is left.
pub fn strip(query: &str) -> Option<String> {
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            !matches!(name, EXPIRES | CLIENT | SIGNATURE)
        })
        .collect();
    (!rest.is_empty() && rest != [""]).then(|| rest.join("&"))
}

/// A token as found in a query string.
struct Token {
    expires: u64,
    /// As sent, since that is what was signed.
    expires_text: String,
    client: Option<IpAddr>,
    client_text: String,
    signature: [u8; 32],
}

impl Token {
    fn parse(query: &str) -> Option<Token> {
        let (mut expires, mut client, mut signature) = (None, None, None);
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .ok()?
                .into_owned();
            let slot = match name {
                EXPIRES => &mut expires,
                CLIENT => &mut client,
                SIGNATURE => &mut signature,
                _ => continue,
            };
            // A parameter given twice is ambiguous: which one was signed?
            if slot.replace(value).is_some() {
                return None;
            }
        }
        let expires_text = expires?;
        let signature_text = signature?;
        if expires_text.is_empty() || !expires_text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let expires = expires_text.parse().ok()?;
        let mut signature = [0u8; 32];
        if signature_text.len() != 64 {
            return None;
        }
        for (i, byte) in signature.iter_mut().enumerate() {
            *byte = u8::from_str_radix(signature_text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        let (client, client_text) = match client {
            None => (None, String::new()),
            Some(text) => (Some(text.parse::<IpAddr>().ok()?.to_canonical()), text),
        };
        Some(Token {
            expires,
            expires_text,
            client,
            client_text,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600;

    fn here() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    fn check(query: &str) -> Result<(), Refusal> {
        verify(
            &[b"other".to_vec(), b"key".to_vec()],
            "/a",
            Some(query),
            here(),
            NOW,
        )
    }

    /// The README's shell and Python give the same (values from
    /// `printf '%s\n%s\n%s' /live/news.ts 1767225600 "" | openssl dgst
    /// -sha256 -hmac secret -r`).
    #[test]
    fn the_documented_computation() {
        assert_eq!(
            signature(b"secret", "/live/news.ts", 1_767_225_600, None),
            "26f88f5fdc3aaff0572c2d604490c839f9431fbc0328740fce1a58576df1ed54"
        );
        assert_eq!(
            signature(
                b"secret",
                "/live/news.ts",
                1_767_225_600,
                Some("203.0.113.5".parse().unwrap())
            ),
            "9dee24c845ce91757d75c8626973b5a0747a133d66f3a1aaea16ef3bd638d457"
        );
    }

    #[test]
    fn a_signed_query_is_accepted_until_it_expires() {
        let query = signed_query(b"key", "/a", NOW + 60, None);
        assert_eq!(check(&query), Ok(()));
        assert_eq!(check(&format!("{query}&player=x")), Ok(()));
        assert_eq!(
            verify(&[b"key".to_vec()], "/a", Some(&query), here(), NOW + 60),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn each_part_is_signed() {
        let query = signed_query(b"key", "/a", NOW + 60, None);
        assert_eq!(
            verify(&[b"key".to_vec()], "/b", Some(&query), here(), NOW),
            Err(Refusal::BadSignature)
        );
        let later = query.replace(&format!("{}", NOW + 60), &format!("{}", NOW + 6000));
        assert_eq!(check(&later), Err(Refusal::BadSignature));
        let bound = signed_query(b"key", "/a", NOW + 60, Some(here()));
        assert_eq!(check(&bound), Ok(()));
        assert_eq!(
            check(&bound.replace("192.0.2.1", "192.0.2.2")),
            Err(Refusal::BadSignature)
        );
        let other = signed_query(b"key", "/a", NOW + 60, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(check(&other), Err(Refusal::OtherClient));
        let unbound = bound.replace("&client=192.0.2.1", "");
        assert_eq!(check(&unbound), Err(Refusal::BadSignature));
        assert_eq!(
            check(&signed_query(b"not a key", "/a", NOW + 60, None)),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let query = signed_query(b"key", "/a", NOW + 60, None);
        for bad in [
            "",
            "expires=1",
            &query.replace("signature=", "signature=zz"),
            &format!("{query}&expires=1"),
            &query.replace(&format!("{}", NOW + 60), "+1767225660"),
        ] {
            assert_eq!(check(bad), Err(Refusal::Malformed), "{bad}");
        }
    }

    #[test]
    fn strip_keeps_other_parameters() {
        assert_eq!(
            strip("offline&expires=1&signature=ab"),
            Some("offline".into())
        );
        assert_eq!(strip("expires=1&client=::1&signature=ab"), None);
        assert_eq!(strip("a=1&b"), Some("a=1&b".into()));
    }
}
