//! TLS for notifications: the certificates a server is verified against
//! (the system store, plus a `ca_file` of PEM certificates for a private
//! CA) and the rustls client configuration (ring) that https webhooks and
//! SMTP with TLS use. Both are built when the settings or a chain file
//! load, so a `ca_file` that cannot be read, or no trusted certificate at
//! all, is a load error. Verification is always on: there is no switch to
//! turn it off.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// The certificates servers are verified against: the system's (as
/// rustls-native-certs finds them: `SSL_CERT_FILE`, `SSL_CERT_DIR`, else
/// /etc/ssl/certs and the other usual places) and those of `ca_file`.
#[derive(Clone)]
pub struct Roots {
    certificates: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Roots({} certificates)", self.certificates.len())
    }
}

impl Roots {
    /// The system's certificates and `ca_file`'s; the message says what to
    /// change.
    pub fn load(ca_file: Option<&Path>) -> Result<Roots, String> {
        // The system store may hold a certificate rustls cannot use; skip
        // it, as every client does.
        let mut certificates: Vec<_> = rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .filter(|c| RootCertStore::empty().add(c.clone()).is_ok())
            .collect();
        if let Some(file) = ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| format!("ca_file {} cannot be read: {e}", file.display()))?;
            let own = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("ca_file {} is not PEM: {e}", file.display()))?;
            if own.is_empty() {
                return Err(format!(
                    "ca_file {} holds no certificate (-----BEGIN CERTIFICATE-----)",
                    file.display()
                ));
            }
            let mut store = RootCertStore::empty();
            for certificate in &own {
                store.add(certificate.clone()).map_err(|e| {
                    format!(
                        "ca_file {}: a certificate cannot be used: {e}",
                        file.display()
                    )
                })?;
            }
            certificates.extend(own);
        }
        if certificates.is_empty() {
            return Err(
                "no trusted certificate: the system store (/etc/ssl/certs) is empty or \
                 missing; install ca-certificates, or give ca_file with the server's CA"
                    .into(),
            );
        }
        Ok(Roots { certificates })
    }

    /// A rustls client configuration (ring, TLS 1.2 and 1.3) that verifies
    /// servers against these certificates.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(self.certificates.iter().cloned());
        // ring rather than aws-lc-rs: no cmake or Go at build time and a
        // smaller tree; rustls deprecates it only for lacking post-quantum
        // key exchange.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// lettre's TLS parameters for the SMTP server `host`, verified against
    /// these certificates only.
    pub fn smtp_parameters(
        &self,
        host: &str,
    ) -> Result<lettre::transport::smtp::client::TlsParameters, String> {
        use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
        let mut builder =
            TlsParameters::builder(host.to_string()).certificate_store(CertificateStore::None);
        for certificate in &self.certificates {
            if let Ok(certificate) = Certificate::from_der(certificate.to_vec()) {
                builder = builder.add_root_certificate(certificate);
            }
        }
        builder.build_rustls().map_err(|e| format!("TLS: {e}"))
    }
}

/// The name a server's certificate must carry: `host` of a URL (an IPv6
/// address without its brackets), also sent as SNI when it is a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string())
        .map_err(|_| format!("{host:?} is neither a DNS name nor an IP address"))
}
