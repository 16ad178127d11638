//! Routing a request path to what the config serves there, as Go's
//! `http.ServeMux` does for the original:
//!
//! - a path that is not clean (`//x`, `/./x`, `/a/../x`) is redirected
//!   (`301`) to its clean form, query kept;
//! - a `serve` path is matched exactly; one that ends in `/` also matches
//!   every path below it, the longest such pattern winning, and an exact
//!   match always wins over a subtree;
//! - a path that names a subtree without its trailing `/` is redirected to
//!   it (`/dir` → `/dir/`).
//!
//! Paths are matched after percent-decoding (as Go matches `URL.Path`), and
//! [`encode_path`] is how a path goes back into a URL: the redirects here,
//! and the links `restreamer sign` prints.
//! Nothing here joins a path to a directory or builds a URL from the
//! request: a route serves exactly what its config entry names, whatever
//! the rest of the path says.

use std::collections::HashMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// Where a request path leads.
#[derive(Debug, PartialEq)]
pub enum Routed<'a, T> {
    /// Served by the route of this pattern.
    Found(&'a T),
    /// Redirect (301) to this location (path and query, encoded).
    Redirect(String),
    NotFound,
}

/// Routes a decoded request `path` (with the request's raw `query`).
pub fn route<'a, T>(
    routes: &'a HashMap<String, T>,
    path: &str,
    query: Option<&str>,
) -> Routed<'a, T> {
    // Only CONNECT has no path; Go's ServeMux finds nothing for it either.
    if !path.starts_with('/') {
        return Routed::NotFound;
    }
    let clean = clean_path(path);
    if clean != path {
        return Routed::Redirect(location(&clean, query));
    }
    if let Some(found) = routes.get(path) {
        return Routed::Found(found);
    }
    if !path.ends_with('/') && routes.contains_key(&format!("{path}/")) {
        return Routed::Redirect(location(&format!("{path}/"), query));
    }
    routes
        .iter()
        .filter(|(pattern, _)| pattern.ends_with('/') && path.starts_with(pattern.as_str()))
        .max_by_key(|(pattern, _)| pattern.len())
        .map_or(Routed::NotFound, |(_, found)| Routed::Found(found))
}

/// The canonical form of a path, as Go's `cleanPath`: a leading `/`, no
/// empty, `.` or `..` segments (`..` never climbs above the root), and a
/// trailing `/` kept if there was one.
pub fn clean_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            name => segments.push(name),
        }
    }
    let mut clean = format!("/{}", segments.join("/"));
    if path.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    clean
}

/// Characters escaped in a path put into a URL: those that would end or
/// change the path (`?`, `#`, `%`), spaces and quotes, and `\` (which
/// browsers read as `/`, so a redirect to `/\host` would leave the site).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A decoded path as it goes into a URL (a redirect's `Location`, a signed
/// link), percent-encoded so that it is routed back to itself.
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

fn location(path: &str, query: Option<&str>) -> String {
    let mut location = encode_path(path);
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_as_go() {
        for (path, clean) in [
            ("/", "/"),
            ("//x", "/x"),
            ("/./x", "/x"),
            ("/a/../x", "/x"),
            ("/../../x", "/x"),
            ("/a/b/..", "/a"),
            ("/a/b/../", "/a/"),
            ("/dir//", "/dir/"),
            ("/x/.", "/x"),
            ("/x", "/x"),
            ("/x/", "/x/"),
        ] {
            assert_eq!(clean_path(path), clean, "{path:?}");
        }
    }

    #[test]
    fn exact_wins_then_the_longest_subtree() {
        let routes: HashMap<String, &str> = [
            ("/health", "health"),
            ("/dir/", "dir"),
            ("/dir/sub/", "sub"),
            ("/dir/exact", "exact"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let found = |path| match route(&routes, path, None) {
            Routed::Found(name) => name.to_string(),
            Routed::Redirect(to) => format!("-> {to}"),
            Routed::NotFound => "404".into(),
        };
        assert_eq!(found("/health"), "health");
        assert_eq!(found("/health/"), "404");
        assert_eq!(found("/healthx"), "404");
        assert_eq!(found("/dir/"), "dir");
        assert_eq!(found("/dir/a/b"), "dir");
        assert_eq!(found("/dir/sub/x"), "sub");
        assert_eq!(found("/dir/exact"), "exact");
        assert_eq!(found("/dir"), "-> /dir/");
        assert_eq!(found("/dir/sub"), "-> /dir/sub/");
        assert_eq!(found("//health"), "-> /health");
        assert_eq!(found("/a/../health"), "-> /health");
        assert_eq!(found("/"), "404");
        assert_eq!(found(""), "404");
        assert_eq!(found("127.0.0.1:1"), "404");
        assert_eq!(
            route(&routes, "/x/../dir/a b?", Some("q=1")),
            Routed::Redirect("/dir/a%20b%3F?q=1".into())
        );
        // A redirect never leaves the site.
        assert_eq!(
            route(&routes, "/\\evil.example/.", None),
            Routed::Redirect("/%5Cevil.example".into())
        );
        assert_eq!(
            route(&routes, "///evil.example", None),
            Routed::Redirect("/evil.example".into())
        );
    }

    #[test]
    fn an_encoded_path_decodes_and_routes_back_to_itself() {
        let path = "/tv\\hd|1^ x?#%\"<>`{}/é";
        let encoded = encode_path(path);
        assert_eq!(
            encoded,
            "/tv%5Chd%7C1%5E%20x%3F%23%25%22%3C%3E%60%7B%7D/%C3%A9"
        );
        let decoded = percent_encoding::percent_decode_str(&encoded)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, path);
        let routes: HashMap<String, ()> = [(path.to_string(), ())].into_iter().collect();
        assert_eq!(route(&routes, &decoded, None), Routed::Found(&()));
    }
}
