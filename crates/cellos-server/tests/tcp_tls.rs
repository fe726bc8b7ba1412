//! TCP listeners: TLS with a certificate generated here, and the bearer token every TCP
//! request needs (constant-time compared; anything else is a 401 problem).

mod common;

use std::sync::Arc;

use cellos_server::config::{BearerToken, TlsFiles};
use common::{free_port, get, send, start, Reply};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

const TOKEN: &str = "correct-horse-battery-staple-42";

/// Writes a self-signed certificate for `localhost` and returns its DER for the client.
fn self_signed(dir: &std::path::Path) -> (TlsFiles, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a certificate");
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&files.key, certified.key_pair.serialize_pem()).expect("write key");
    (files, certified.cert.der().clone())
}

fn connector(cert: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

fn with_token(
    uri: &str,
    token: Option<&str>,
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    let mut request = get(uri);
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    request
}

async fn over_tls(addr: std::net::SocketAddr, tls: &TlsConnector, token: Option<&str>) -> Reply {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let stream = tls.connect(name, tcp).await.expect("TLS handshake");
    send(stream, with_token("/healthz", token)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_requires_the_bearer_token() {
    let addr = free_port();
    let cert_dir = tempfile::tempdir().expect("tempdir");
    let (files, der) = self_signed(cert_dir.path());
    let server = start(|config, _| {
        config.tcp = vec![addr];
        config.tls = Some(files);
        config.token = Some(BearerToken::new(TOKEN));
    })
    .await;
    let tls = connector(der);

    let missing = over_tls(addr, &tls, None).await;
    missing.problem(401, "unauthorized");
    assert_eq!(
        missing
            .headers
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    over_tls(addr, &tls, Some("correct-horse-battery-staple-43"))
        .await
        .problem(401, "unauthorized");
    over_tls(addr, &tls, Some("short"))
        .await
        .problem(401, "unauthorized");
    let ok = over_tls(addr, &tls, Some(TOKEN)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["status"], "ok");

    // The Unix socket needs no token: the peer's uid is the identity.
    assert_eq!(server.unix(get("/healthz")).await.status, 200);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_on_loopback_still_needs_the_token() {
    let addr = free_port();
    let server = start(|config, _| {
        config.tcp = vec![addr];
        config.token = Some(BearerToken::new(TOKEN));
    })
    .await;
    let plain = |token: Option<&'static str>| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        send(tcp, with_token("/v1/version", token)).await
    };
    plain(None).await.problem(401, "unauthorized");
    plain(Some("wrong-wrong-wrong-wrong"))
        .await
        .problem(401, "unauthorized");
    assert_eq!(plain(Some(TOKEN)).await.status, 200);
    // Denials are counted.
    let metrics = String::from_utf8(server.unix(get("/metrics")).await.body).expect("utf-8");
    assert!(
        metrics.contains("cellos_denials_total{kind=\"unauthorized\"} 2"),
        "{metrics}"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn unsafe_tcp_configurations_are_refused_before_listening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = cellos_server::ServeConfig::new(dir.path().join("s.sock"));
    config.tcp = vec!["0.0.0.0:0".parse().expect("addr")];
    let feed = Arc::new(cellos_server::EventFeed::new(
        Arc::new(common::MemorySink::default()),
        10,
    ));
    let result = cellos_server::serve(
        config,
        common::sessions(feed.clone()),
        feed,
        std::future::ready(()),
    )
    .await;
    assert!(matches!(
        result,
        Err(cellos_server::ServeError::Config(
            cellos_server::ConfigError::TokenRequired
        ))
    ));
    assert!(!dir.path().join("s.sock").exists());
}
