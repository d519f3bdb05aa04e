//! TLS for the SMTP client: the rustls configuration built once per relay (ring, the webpki
//! roots, plus the operator's own trust anchors from `smtp.ca_file` for a relay with a private
//! CA), and the handshake over the socket Missive opened (so `TCP_NODELAY` holds).
//!
//! Depends on `mailer` (for its error type) only.

use crate::mailer::MailerError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The client configuration for one relay: the public roots, and those in `ca_file` if set.
pub(super) fn client_config(
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, MailerError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        add_trust_anchors(&mut roots, path)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| MailerError::Tls(format!("cannot set up TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Checks that `path` is a PEM file of certificates usable as trust anchors, as start-up does
/// for `smtp.ca_file`. The error says what is wrong with the file, without the key's name.
pub fn check_ca_file(path: &Path) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    add_trust_anchors(&mut roots, path).map_err(|e| match e {
        MailerError::CaFile(problem) => problem,
        other => other.to_string(),
    })
}

fn add_trust_anchors(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), MailerError> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| MailerError::CaFile(format!("`{shown}` cannot be read: {e}")))?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert
            .map_err(|e| MailerError::CaFile(format!("`{shown}` is not a valid PEM file: {e}")))?;
        roots.add(cert).map_err(|e| {
            MailerError::CaFile(format!(
                "`{shown}` holds a certificate that cannot be a trust anchor: {e}"
            ))
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(MailerError::CaFile(format!(
            "`{shown}` holds no certificate (hint: it should hold the relay's CA certificate \
             as one or more -----BEGIN CERTIFICATE----- blocks)"
        )));
    }
    Ok(())
}

/// The TLS handshake with `host` over `tcp`. The error is a sentence for the organiser, with a
/// hint when the certificate was not trusted.
pub(super) async fn handshake(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("TLS with {host} failed: `{host}` is not a valid server name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let untrusted = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)));
            let hint = if untrusted {
                " (hint: if the relay's certificate comes from a private CA, set smtp.ca_file \
                 to that CA's PEM file)"
            } else {
                ""
            };
            format!("TLS with {host} failed: {e}{hint}")
        })?;
    Ok(stream)
}
