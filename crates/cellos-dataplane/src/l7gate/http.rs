//! The `Host` of the first HTTP/1.x request on a connection.
//!
//! Hand-written: only the request line and one header matter, and the gate must judge the raw
//! bytes exactly as sent (a general HTTP parser would normalise away the ambiguities that
//! request smuggling relies on). Ambiguity is refused: several `Host` headers, an
//! absolute-form target naming another host, or anything that is not HTTP/1.x.

use cellos_core::spec::check_dns_name;

/// Largest request head the gate reads before deciding.
pub const MAX_HEAD: usize = 16 * 1024;

/// Outcome of looking at the first bytes of a plain-HTTP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    NeedMore,
    /// The request's host name, lower-cased, port removed.
    Host(String),
    /// An HTTP/1.x request without a `Host` header.
    NoHost,
    Malformed(&'static str),
}

/// Looks for the `Host` of the request that starts `buf`.
pub fn parse_request_head(buf: &[u8]) -> Head {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Head::Malformed("request head larger than the gate accepts")
        } else if looks_like_http_so_far(buf) {
            Head::NeedMore
        } else {
            Head::Malformed("not an HTTP/1.x request")
        };
    };
    let Some(head) = buf.get(..end) else {
        return Head::NeedMore;
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return Head::Malformed("request head is not text");
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Malformed("bad request line");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Head::Malformed("bad request method");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Head::Malformed("not HTTP/1.0 or HTTP/1.1");
    }
    let mut host = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Head::Malformed("header line without ':'");
        };
        if name.is_empty() || name.ends_with([' ', '\t']) {
            return Head::Malformed("bad header name");
        }
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Head::Malformed("several Host headers");
            }
            host = Some(value.trim_matches([' ', '\t']));
        }
    }
    let Some(host) = host else {
        return Head::NoHost;
    };
    let Some(host) = strip_port(host) else {
        return Head::Malformed("Host is not a name with an optional port");
    };
    if check_dns_name(host).is_err() {
        return Head::Malformed("Host is not a DNS name");
    }
    let host = crate::pin::normalize(host);
    if let Some(authority) = absolute_form_authority(target) {
        match strip_port(authority) {
            Some(a) if crate::pin::normalize(a) == host => {}
            _ => return Head::Malformed("absolute-form target names another host than Host"),
        }
    }
    Head::Host(host)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Could `buf` still become a request line (`TOKEN SP`)?
fn looks_like_http_so_far(buf: &[u8]) -> bool {
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match buf.get(method_len) {
        None => method_len < 16,
        Some(b' ') => method_len > 0,
        Some(_) => false,
    }
}

/// `name` or `name:port` → `name`.
fn strip_port(host: &str) -> Option<&str> {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some(name)
        }
        Some(_) => None,
        None => Some(host),
    }
}

/// The authority of an `http://authority/...` target.
fn absolute_form_authority(target: &str) -> Option<&str> {
    let lower = target
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let rest = if lower.starts_with("http://") {
        target.get(7..)?
    } else if lower.starts_with("https://") {
        target.get(8..)?
    } else {
        return None;
    };
    Some(rest.split(['/', '?', '#']).next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn host_header_is_found_lower_cased_without_port() {
        assert_eq!(
            parse_request_head(
                b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhost: API.allowed.test:8080\r\n\r\n"
            ),
            Head::Host("api.allowed.test".into())
        );
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        let full = b"GET / HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(
                parse_request_head(&full[..cut]),
                Head::NeedMore,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn ambiguous_requests_are_malformed() {
        for req in [
            &b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"[..],
            b"GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: 203.0.113.10\r\n\r\n",
            b"\x16\x03\x01\x00\x05hello",
        ] {
            assert!(
                matches!(parse_request_head(req), Head::Malformed(_)),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
        assert_eq!(
            parse_request_head(b"GET http://a.test:80/x HTTP/1.1\r\nHost: a.test\r\n\r\n"),
            Head::Host("a.test".into())
        );
    }

    #[test]
    fn missing_host_is_reported() {
        assert_eq!(parse_request_head(b"GET / HTTP/1.0\r\n\r\n"), Head::NoHost);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_request_head(&bytes);
        }

        #[test]
        fn arbitrary_headers_never_panic(h in "[ -~\r\n]{0,300}") {
            let req = format!("GET / HTTP/1.1\r\n{h}\r\n\r\n");
            let _ = parse_request_head(req.as_bytes());
        }
    }
}
