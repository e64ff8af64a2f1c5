//! The rustls server configuration, built once at start from the configured PEM files; every
//! problem with them is refused then, with the file it is about.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoClientAuth, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;
use crate::limits::TLS_PEM_FILE_SIZE_MAX_BYTES;

/// The server configuration every shard's TLS listener shares.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let chain = certificates(&tls.cert)?;
    let key = private_key(&tls.key)?;
    let verifier = client_verifier(tls, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "TLS: certificate {} and key {} do not make a usable pair: {e}",
                tls.cert.display(),
                tls.key.display()
            )
        })?;
    // AMQP has no ALPN identifier and clients send none; sessions are not resumed across
    // connections (one connection lives for hours), so no tickets are written after the
    // handshake.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// RabbitMQ's `verify_peer` asks for a client certificate and checks it against the CA file;
/// `fail_if_no_peer_cert` refuses a client that sends none (otherwise it is let in, without
/// EXTERNAL). `verify_none`: no certificate is asked for.
fn client_verifier(
    tls: &TlsConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    if !tls.verify_peer {
        return Ok(Arc::new(NoClientAuth));
    }
    let Some(ca) = &tls.ca else {
        return Err("TLS: verify_peer needs a CA file (--tls-ca) to check clients against".into());
    };
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca)? {
        roots
            .add(certificate)
            .map_err(|e| format!("TLS: CA file {}: {e}", ca.display()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if tls.fail_if_no_peer_cert {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| format!("TLS: CA file {}: {e}", ca.display()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS: {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("TLS: {} holds no certificate", path.display()));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("TLS: {}: no usable private key: {e}", path.display()))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let error = |e: std::io::Error| format!("TLS: cannot read {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(error)?;
    let mut pem = Vec::new();
    file.take(TLS_PEM_FILE_SIZE_MAX_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(error)?;
    if pem.len() as u64 > TLS_PEM_FILE_SIZE_MAX_BYTES {
        return Err(format!(
            "TLS: {} is larger than {TLS_PEM_FILE_SIZE_MAX_BYTES} bytes",
            path.display()
        ));
    }
    Ok(pem)
}
