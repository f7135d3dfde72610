//! HTTPS webhooks against a local TLS server whose certificate a private CA
//! (made here with rcgen) signed: refused without `--ca-file`, and parked as
//! a dead letter, never dropped; delivered with it, the parked send too.

use super::harness::*;
use super::webhook::{receiver_app, Receiver, Running, SECRET};
use std::sync::Arc;
use tokio_rustls::rustls;

/// A CA and a certificate for 127.0.0.1 it signed: (CA PEM, server chain, server key).
fn private_ca() -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "journeyc test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
    server_params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    (
        ca_cert.pem(),
        server_cert.der().clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
    )
}

/// The receiver of `webhook.rs` behind TLS (tokio-rustls, hyper).
fn start_tls_receiver(
    chain: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Running {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![chain], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Running::start(
        "https",
        Receiver::default(),
        move |seen, listener, mut stop| async move {
            let app = receiver_app(seen.clone());
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => accepted.expect("accept"),
                    _ = &mut stop => return,
                };
                let (acceptor, app, seen) = (acceptor.clone(), app.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        seen.lock().expect("lock").handshakes_failed += 1;
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        },
    )
}

#[test]
fn https_webhook_needs_the_private_ca_and_parks_until_it_is_given() {
    let (ca_pem, chain, key) = private_ca();
    let receiver = start_tls_receiver(chain, key);
    assert!(receiver.url.starts_with("https://127.0.0.1:"), "{}", receiver.url);
    let env = Env::new(WORKSPACE);
    let ca_file = env.root.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("write CA");
    let jsonl = format!("jsonl:{}", env.sends().display());
    let webhook = format!("webhook:{}", receiver.url);
    let flags = [
        "--sink",
        jsonl.as_str(),
        "--sink",
        webhook.as_str(),
        "--webhook-attempts",
        "2",
        "--webhook-retry-ms",
        "10",
        "--webhook-secret",
        SECRET,
    ];

    // Without the CA: the server's certificate is not trusted; both
    // attempts fail the handshake and the send is parked, not dropped.
    let daemon = env.start(&flags);
    assert_eq!(daemon.post("/v1/track", &ping("tls", "m1", 1)).status, 200);
    let letter = eventually("a dead letter", || {
        let listed = daemon.get("/v1/outbox/dead").json();
        (listed["total"] == 1).then(|| listed["dead_letters"][0].clone())
    });
    assert_eq!(letter["reason"], "attempts_exhausted");
    assert_eq!(letter["attempts"], 2);
    let error = letter["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );
    {
        let seen = receiver.seen();
        assert!(seen.handshakes_failed >= 2, "{}", seen.handshakes_failed);
        assert!(seen.ids.is_empty() && seen.accepted.is_empty());
    }
    let send_id = letter["id"].as_str().expect("send id").to_string();
    assert_eq!(daemon.terminate(), Some(0));

    // With the CA: the parked send goes out on request, with its id, then
    // new sends go straight through.
    let ca_flag = ca_file.to_str().expect("path");
    let daemon = env.start(&[&flags[..], &["--ca-file", ca_flag]].concat());
    let retried = daemon.post("/v1/outbox/retry", "").json();
    assert_eq!(retried["requeued"], 1, "{retried}");
    let first = eventually("the parked send over HTTPS", || {
        receiver.seen().accepted.first().cloned()
    });
    assert_eq!(first.0, send_id);
    assert_eq!(first.1["customer"], "tls");
    assert_eq!(daemon.post("/v1/track", &ping("tls", "m2", 2)).status, 200);
    eventually("the new send over HTTPS", || {
        (receiver.seen().accepted.len() == 2).then_some(())
    });
    let seen = receiver.seen();
    assert_ne!(seen.accepted[1].0, send_id);
    assert_eq!(seen.ids.len(), 2);
    assert!(seen.verified.iter().all(|ok| *ok), "{:?}", seen.verified);
    drop(seen);
    assert_eq!(daemon.get("/v1/outbox/dead").json()["total"], 0);
}
