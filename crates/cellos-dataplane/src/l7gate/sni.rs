//! Server Name Indication from a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3).
//!
//! Hand-written: the gate never terminates TLS, it only needs this one field, and the crates
//! that parse ClientHellos do so as part of a full TLS stack (rustls, openssl). Every read is
//! bounds-checked through [`Reader`]; no input can make this panic (see the proptest).
//!
//! A ClientHello may span several TLS records; their handshake fragments are reassembled, up
//! to [`MAX_HELLO`] bytes.

use cellos_core::spec::check_dns_name;

/// Largest ClientHello the gate reassembles (post-quantum key shares make them ~2 KiB; this
/// leaves room for large extension sets while bounding memory per connection).
pub const MAX_HELLO: usize = 32 * 1024;

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;
/// TLS plaintext records carry at most 2^14 bytes.
const MAX_RECORD: usize = 1 << 14;

/// Outcome of looking at the first bytes of a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// The ClientHello is not complete yet; read more.
    NeedMore,
    /// The host name the client asked for, lower-cased.
    Sni(String),
    /// A well-formed ClientHello without a host name.
    NoSni,
    /// Not a ClientHello, or a broken one.
    Malformed(&'static str),
}

/// Bounds-checked big-endian reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(
            usize::from(*b.first()?) << 16 | usize::from(*b.get(1)?) << 8 | usize::from(*b.get(2)?),
        )
    }

    /// A vector with a `len_bytes`-byte length prefix.
    fn vec(&mut self, len_bytes: u8) -> Option<&'a [u8]> {
        let len = match len_bytes {
            1 => usize::from(self.u8()?),
            2 => usize::from(self.u16()?),
            _ => self.u24()?,
        };
        self.take(len)
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Looks for the SNI in the bytes a client sent first.
pub fn parse_client_hello(buf: &[u8]) -> Hello {
    let mut records = Reader::new(buf);
    let mut handshake: Vec<u8> = Vec::new();
    loop {
        if let Some(total) = handshake_len(&handshake) {
            if total > MAX_HELLO {
                return Hello::Malformed("ClientHello larger than the gate accepts");
            }
            if let Some(msg) = handshake.get(4..4 + total) {
                return parse_hello_body(msg);
            }
        }
        let Some(&[content_type, major, _minor, len_hi, len_lo]) = records.take(5) else {
            return Hello::NeedMore;
        };
        let len = u16::from_be_bytes([len_hi, len_lo]);
        if content_type != RECORD_HANDSHAKE {
            return Hello::Malformed("first record is not a TLS handshake");
        }
        if major != 3 {
            return Hello::Malformed("unknown TLS record version");
        }
        let len = usize::from(len);
        if len == 0 || len > MAX_RECORD {
            return Hello::Malformed("TLS record length out of range");
        }
        let Some(fragment) = records.take(len) else {
            return Hello::NeedMore;
        };
        handshake.extend_from_slice(fragment);
        if handshake
            .first()
            .is_some_and(|t| *t != HANDSHAKE_CLIENT_HELLO)
        {
            return Hello::Malformed("first handshake message is not a ClientHello");
        }
        if handshake.len() > MAX_HELLO + 4 {
            return Hello::Malformed("ClientHello larger than the gate accepts");
        }
    }
}

/// Length of the handshake message once its 4-byte header is complete.
fn handshake_len(handshake: &[u8]) -> Option<usize> {
    let mut r = Reader::new(handshake);
    r.u8()?;
    r.u24()
}

fn parse_hello_body(body: &[u8]) -> Hello {
    let mut r = Reader::new(body);
    let Some(extensions) = (|| {
        r.take(2)?; // legacy_version
        r.take(32)?; // random
        r.vec(1)?; // legacy_session_id
        r.vec(2)?; // cipher_suites
        r.vec(1)?; // legacy_compression_methods
        if r.is_empty() {
            return Some(None); // pre-extension ClientHello
        }
        Some(Some(r.vec(2)?))
    })() else {
        return Hello::Malformed("truncated ClientHello");
    };
    let Some(extensions) = extensions else {
        return Hello::NoSni;
    };
    let mut exts = Reader::new(extensions);
    while !exts.is_empty() {
        let (Some(ty), Some(data)) = (exts.u16(), exts.vec(2)) else {
            return Hello::Malformed("truncated extension");
        };
        if ty == EXT_SERVER_NAME {
            return parse_server_name(data);
        }
    }
    Hello::NoSni
}

fn parse_server_name(data: &[u8]) -> Hello {
    let mut r = Reader::new(data);
    let Some(list) = r.vec(2) else {
        return Hello::Malformed("truncated server_name extension");
    };
    let mut names = Reader::new(list);
    while !names.is_empty() {
        let (Some(kind), Some(name)) = (names.u8(), names.vec(2)) else {
            return Hello::Malformed("truncated server_name entry");
        };
        if kind != NAME_TYPE_HOST {
            continue;
        }
        let Ok(text) = std::str::from_utf8(name) else {
            return Hello::Malformed("server_name is not ASCII");
        };
        if check_dns_name(text).is_err() {
            return Hello::Malformed("server_name is not a DNS name");
        }
        return Hello::Sni(crate::pin::normalize(text));
    }
    Hello::NoSni
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal ClientHello built per RFC 8446, with an optional SNI.
    pub(crate) fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut exts = Vec::new();
        // supported_versions: TLS 1.3
        exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        if let Some(name) = sni {
            let n = name.len() as u16;
            exts.extend_from_slice(&[0x00, 0x00]);
            exts.extend_from_slice(&(n + 5).to_be_bytes());
            exts.extend_from_slice(&(n + 3).to_be_bytes());
            exts.push(0);
            exts.extend_from_slice(&n.to_be_bytes());
            exts.extend_from_slice(name.as_bytes());
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![HANDSHAKE_CLIENT_HELLO];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![RECORD_HANDSHAKE, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn hand_built_hello_yields_its_sni() {
        assert_eq!(
            parse_client_hello(&client_hello(Some("API.Allowed.test"))),
            Hello::Sni("api.allowed.test".into())
        );
        assert_eq!(parse_client_hello(&client_hello(None)), Hello::NoSni);
    }

    #[test]
    fn every_truncation_asks_for_more() {
        let full = client_hello(Some("api.allowed.test"));
        for cut in 0..full.len() {
            assert_eq!(
                parse_client_hello(&full[..cut]),
                Hello::NeedMore,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_hello_split_across_records_is_reassembled() {
        let one = client_hello(Some("api.allowed.test"));
        let hs = &one[5..];
        let (a, b) = hs.split_at(10);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[RECORD_HANDSHAKE, 3, 1]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(
            parse_client_hello(&two),
            Hello::Sni("api.allowed.test".into())
        );
    }

    #[test]
    fn non_tls_and_bad_names_are_malformed() {
        assert!(matches!(
            parse_client_hello(b"GET / HTTP/1.1\r\n"),
            Hello::Malformed(_)
        ));
        assert!(matches!(
            parse_client_hello(&client_hello(Some("bad_name!.test"))),
            Hello::Malformed(_)
        ));
        assert!(matches!(
            parse_client_hello(&client_hello(Some("203.0.113.10"))),
            Hello::Malformed(_)
        ));
        let mut wrong_len = client_hello(Some("a.test"));
        wrong_len[3] = 0xff;
        wrong_len[4] = 0xff;
        assert!(matches!(
            parse_client_hello(&wrong_len),
            Hello::Malformed(_)
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_client_hello(&bytes);
        }

        #[test]
        fn corrupted_hellos_never_panic(pos in 0usize..200, byte in any::<u8>()) {
            let mut hello = client_hello(Some("api.allowed.test"));
            if let Some(b) = hello.get_mut(pos) {
                *b = byte;
            }
            let _ = parse_client_hello(&hello);
        }

        #[test]
        fn arbitrary_bytes_after_a_handshake_header_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..1024)
        ) {
            let mut buf = vec![RECORD_HANDSHAKE, 3, 1];
            buf.extend_from_slice(&(bytes.len() as u16 + 4).to_be_bytes());
            buf.extend_from_slice(&[HANDSHAKE_CLIENT_HELLO, 0, (bytes.len() >> 8) as u8, bytes.len() as u8]);
            buf.extend_from_slice(&bytes);
            let _ = parse_client_hello(&buf);
        }
    }
}
