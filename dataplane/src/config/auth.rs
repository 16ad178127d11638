//! Authentication: HTTP `Basic` and `Bearer` credentials of the users of
//! the config, those a resource accepts and those a notification sends;
//! and signed URLs (`token`, see [`super::token`]), whose keys are those
//! users' passwords.
//!
//! The accepted `Authorization` values are computed once, when the config
//! is validated. A request's value is compared with every accepted one in
//! constant time, and all of them are always compared, so the answer's
//! timing tells nothing about how much of a credential was right or which
//! user it matched.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderValue};
use subtle::ConstantTimeEq;

use super::{token, AuthType, Authentication, Config};

/// The credentials a resource accepts.
#[derive(Clone, PartialEq)]
pub struct Authenticator {
    kind: AuthType,
    /// The full `Authorization` header values that are accepted.
    accepted: Vec<Vec<u8>>,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: HeaderValue,
}

// Credentials must not end up in logs through a stray `{:?}`.
impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("kind", &self.kind)
            .field("users", &self.accepted.len())
            .finish()
    }
}

impl Authenticator {
    /// The authenticator of a resource, or `None` when it is open to all.
    pub fn new(auth: &Authentication, config: &Config) -> Option<Authenticator> {
        if auth.is_none() {
            return None;
        }
        let accepted = auth
            .named_users()
            .filter_map(|name| {
                let user = config.userlist.get(name)?;
                Some(match auth.kind {
                    // The signing keys themselves.
                    AuthType::Token => user.password.clone().into_bytes(),
                    kind => kind.credential(name, &user.password).into_bytes(),
                })
            })
            .collect();
        let scheme = match auth.kind {
            AuthType::Bearer => "Bearer",
            AuthType::Token => "Token",
            _ => "Basic",
        };
        let realm = auth.realm.replace(['"', '\\'], "");
        let challenge =
            HeaderValue::from_str(&format!("{scheme} realm=\"{realm}\" charset=\"UTF-8\""))
                .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        Some(Authenticator {
            kind: auth.kind,
            accepted,
            challenge,
        })
    }

    /// Whether the request's headers carry an accepted credential.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let given = given.as_bytes();
        let mut allowed = subtle::Choice::from(0);
        for accepted in &self.accepted {
            allowed |= accepted.as_slice().ct_eq(given);
        }
        allowed.into()
    }

    /// Whether a request of `path` (decoded) from `client` is let in: by
    /// its `Authorization` header, or for `token`, by the signed URL in its
    /// `query`. The reason of a refusal is for the log.
    pub fn check(
        &self,
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        client: IpAddr,
    ) -> Result<(), &'static str> {
        if self.kind == AuthType::Token {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            return token::verify(&self.accepted, path, query, client, now)
                .map_err(token::Refusal::as_str);
        }
        match self.allows(headers) {
            true => Ok(()),
            false => Err("missing or wrong credentials"),
        }
    }

    /// Whether the credentials are in the query (signed URLs), to be taken
    /// out before the request is answered.
    pub fn is_token(&self) -> bool {
        self.kind == AuthType::Token
    }

    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }
}

impl AuthType {
    /// The `Authorization` header value for a user: `Basic
    /// base64(user:password)` or, as the original does, `Bearer <password>`
    /// with the password as written (the original expects the password to
    /// be the token already and encodes nothing; its documentation says
    /// otherwise).
    pub fn credential(self, user: &str, password: &str) -> String {
        match self {
            AuthType::Bearer => format!("Bearer {password}"),
            _ => format!("Basic {}", BASE64.encode(format!("{user}:{password}"))),
        }
    }
}

impl Config {
    /// What a notification sends: as the original, the credentials of the
    /// first configured user; none when `auth` has no type.
    pub fn first_credential(&self, auth: &Authentication) -> Option<String> {
        if auth.is_none() {
            return None;
        }
        let first = auth.named_users().find(|user| !user.is_empty())?;
        let user = self.userlist.get(first)?;
        Some(auth.kind.credential(first, &user.password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(kind: AuthType, user: &str, password: &str) -> String {
        kind.credential(user, password)
    }

    fn config() -> super::super::ValidConfig {
        Config::parse(
            r#"{"userlist": {"alice": {"password": "wonder"}, "bob": {"password": "builder"}}}"#,
        )
        .unwrap()
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn basic_accepts_listed_users_only() {
        let auth = Authentication {
            kind: AuthType::Basic,
            realm: "tv".into(),
            users: vec!["alice".into()],
            ..Default::default()
        };
        let authenticator = Authenticator::new(&auth, &config()).unwrap();
        assert!(authenticator.allows(&headers(&credential(AuthType::Basic, "alice", "wonder"))));
        assert!(!authenticator.allows(&headers(&credential(AuthType::Basic, "alice", "wrong"))));
        assert!(!authenticator.allows(&headers(&credential(AuthType::Basic, "bob", "builder"))));
        assert!(!authenticator.allows(&HeaderMap::new()));
        assert_eq!(
            authenticator.challenge(),
            "Basic realm=\"tv\" charset=\"UTF-8\""
        );
    }

    /// As the original: the token is the password as written.
    #[test]
    fn bearer_is_the_password_as_written() {
        let auth = Authentication {
            kind: AuthType::Bearer,
            realm: "api".into(),
            user: "bob".into(),
            ..Default::default()
        };
        let authenticator = Authenticator::new(&auth, &config()).unwrap();
        assert!(authenticator.allows(&headers("Bearer builder")));
        assert_eq!(
            credential(AuthType::Bearer, "bob", "builder"),
            "Bearer builder"
        );
        assert!(!authenticator.allows(&headers("Bearer YnVpbGRlcg==")));
        assert!(!authenticator.allows(&headers("Basic builder")));
        assert!(!authenticator.allows(&headers("Bearer wonder")));
    }

    #[test]
    fn no_authentication_means_open() {
        assert!(Authenticator::new(&Authentication::default(), &config()).is_none());
    }

    #[test]
    fn debug_output_has_no_credentials() {
        let auth = Authentication {
            kind: AuthType::Basic,
            users: vec!["alice".into()],
            ..Default::default()
        };
        let shown = format!("{:?}", Authenticator::new(&auth, &config()).unwrap());
        assert!(!shown.contains("wonder") && !shown.contains(&BASE64.encode("alice:wonder")));
    }
}
