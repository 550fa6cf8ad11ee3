//! Connections to the collector: a tonic channel for OTLP/gRPC, a reqwest client for OTLP/HTTP,
//! both over rustls (ring) for `https://` endpoints, trusting the given CA or else the system's
//! roots, with the client certificate and key when given (mutual TLS).
//!
//! Headers: [`http_client`] sends them with every request itself; a gRPC channel cannot, so the
//! caller adds [`grpc_metadata`] to each request. Either way their values are marked sensitive and
//! never appear in an error message or a log line.
//!
//! Every file is read and checked here, so that a bad CA, certificate or key is one clear error at
//! start-up rather than a failed export later.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::settings::{OtlpSettings, TlsFiles};

/// A lazily connecting gRPC channel to `endpoint` (connects at the first request, and again after
/// a failure). Must be called within a tokio runtime.
pub fn grpc_channel(settings: &OtlpSettings, endpoint: &str) -> Result<Channel> {
    let pem = TlsPem::load(&settings.tls)?;
    let setup = |e: &dyn std::error::Error| anyhow!("cannot set up OTLP/gRPC export to {endpoint}: {}", chain(e));
    let mut channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| setup(&e))?
        .connect_timeout(settings.timeout)
        .timeout(settings.timeout);
    if is_https(endpoint) {
        let mut tls = ClientTlsConfig::new();
        tls = match pem.ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = pem.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        channel = channel.tls_config(tls).map_err(|e| setup(&e))?;
    }
    Ok(channel.connect_lazy())
}

/// The settings' headers as gRPC metadata, values marked sensitive.
pub fn grpc_metadata(settings: &OtlpSettings) -> Result<MetadataMap> {
    let mut map = MetadataMap::new();
    for (name, value) in &settings.headers {
        let key = AsciiMetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| anyhow!("invalid OTLP header name {name:?} for gRPC metadata"))?;
        let mut value = AsciiMetadataValue::try_from(value.as_str())
            .map_err(|_| anyhow!("invalid value for OTLP header {name}"))?;
        value.set_sensitive(true);
        map.append(key, value);
    }
    Ok(map)
}

/// An HTTP client for OTLP/HTTP: TLS as configured, the settings' headers on every request, each
/// request bounded by the settings' timeout.
pub fn http_client(settings: &OtlpSettings) -> Result<reqwest::Client> {
    let pem = TlsPem::load(&settings.tls)?;
    let https = [&settings.traces_endpoint, &settings.metrics_endpoint].into_iter().flatten().any(|e| is_https(e));
    let tls = pem.rustls_config(https)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .default_headers(http_headers(settings)?)
        .timeout(settings.timeout)
        .build()
        .map_err(|e| anyhow!("cannot set up OTLP/HTTP export: {}", chain(&e)))
}

/// Everything [`grpc_channel`] or [`http_client`] would refuse for `endpoint`, without a runtime:
/// the TLS files (and the system's roots for https), the headers.
pub fn check(settings: &OtlpSettings, endpoint: &str) -> Result<()> {
    TlsPem::load(&settings.tls)?.rustls_config(is_https(endpoint))?;
    grpc_metadata(settings)?;
    http_headers(settings).map(drop)
}

fn is_https(endpoint: &str) -> bool {
    endpoint.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The settings' headers for reqwest, values marked sensitive.
fn http_headers(settings: &OtlpSettings) -> Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &settings.headers {
        let key = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| anyhow!("invalid OTLP header name {name:?}"))?;
        let mut value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| anyhow!("invalid value for OTLP header {name}"))?;
        value.set_sensitive(true);
        headers.append(key, value);
    }
    Ok(headers)
}

/// The TLS files' contents, checked: the CA and client certificate hold certificates, the key is a
/// private key, and certificate and key belong together.
struct TlsPem {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsPem {
    fn load(files: &TlsFiles) -> Result<Self> {
        let ca = files.ca.as_deref().map(|p| read(p, "CA certificate")).transpose()?;
        if let (Some(path), Some(pem)) = (&files.ca, &ca) {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(path, pem, "CA certificate")? {
                roots.add(cert).map_err(|e| {
                    anyhow!("the OTLP CA certificate file {} holds an unusable certificate: {e}", path.display())
                })?;
            }
        }
        let identity = match (&files.client_cert, &files.client_key) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                bail!(
                    "an OTLP client certificate and its key go together: give both (--otlp-client-cert, --otlp-client-key)"
                )
            }
            (Some(cert_path), Some(key_path)) => {
                let cert = read(cert_path, "client certificate")?;
                let key = read(key_path, "client key")?;
                Some((cert, key))
            }
        };
        let pem = TlsPem { ca, identity };
        // Also checks that certificate and key match.
        pem.rustls_config(false).map(drop).map_err(|e| match (&files.client_cert, &files.client_key) {
            (Some(c), Some(k)) => e.context(format!("OTLP client certificate {} and key {}", c.display(), k.display())),
            _ => e,
        })?;
        Ok(pem)
    }

    /// A rustls client configuration (ring): the CA, else the system's roots (required only when
    /// `need_roots`, i.e. some endpoint is https), and the client identity.
    fn rustls_config(&self, need_roots: bool) -> Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(pem) => {
                let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>();
                roots.add_parsable_certificates(certs.map_err(|_| anyhow!("unreadable CA certificate"))?);
            }
            None if need_roots => {
                let native = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    bail!("no system root certificates found for https to the collector: give its CA with --otlp-ca");
                }
            }
            None => {}
        }
        // ring rather than aws-lc-rs: no C toolchain (cmake) in the build. rustls 0.23.48 deprecates
        // it for lacking post-quantum key exchange, which the collector link can do without.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots);
        let Some((cert, key)) = &self.identity else {
            return Ok(builder.with_no_client_auth());
        };
        let certs = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| anyhow!("the client certificate file holds no PEM certificate"))?;
        // The PEM parser's error may quote the file: say only what was expected.
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|_| anyhow!("the client key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"))?;
        builder.with_client_auth_cert(certs, key).map_err(|e| anyhow!("unusable client certificate and key: {e}"))
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow!("cannot read the OTLP {what} file {}: {e}", path.display()))
}

/// The certificates of a PEM file; at least one.
fn certificates(path: &Path, pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        _ => bail!("the OTLP {what} file {} holds no PEM certificate", path.display()),
    }
}

/// An error and its sources on one line (tonic's and reqwest's own messages are terse).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}
