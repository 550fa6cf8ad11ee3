//! How to reach an OTLP collector: endpoint, protocol, headers, timeout, compression, TLS files.
//! Resolved from flags and the standard `OTEL_*` variables by `otel_env`; used by the span
//! exporter and the metrics exporter alike (see `transport`).

use std::path::PathBuf;
use std::time::Duration;

use super::super::OtlpProtocol;

/// One signal's collector settings (`otel_env::OtlpConfig` has one for traces, one for metrics).
/// Endpoints are final URLs: the specification's path rules are already applied. Only the
/// endpoint of the signal these settings are for is set.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// Sent with every request (API keys, bearer tokens): never logged, see the Debug impl.
    pub headers: Vec<(String, String)>,
    /// Bound on one export, retries included.
    pub timeout: Duration,
    pub gzip: bool,
    pub tls: TlsFiles,
}

/// PEM files for TLS to the collector. Without `ca`, the system's roots are trusted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The export timeout when none is configured. Shorter than the specification's 10 s: the agent
/// gives its exporter 5 s to flush at shutdown, and one export must fit in it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for OtlpSettings {
    fn default() -> Self {
        OtlpSettings {
            traces_endpoint: None,
            metrics_endpoint: None,
            protocol: OtlpProtocol::Grpc,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            gzip: false,
            tls: TlsFiles::default(),
        }
    }
}

impl std::fmt::Debug for OtlpSettings {
    /// Header names only: their values are credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self.headers.iter().map(|(name, _)| format!("{name}=<redacted>")).collect();
        f.debug_struct("OtlpSettings")
            .field("traces_endpoint", &self.traces_endpoint)
            .field("metrics_endpoint", &self.metrics_endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("gzip", &self.gzip)
            .field("tls", &self.tls)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_header_names_not_values() {
        let s = OtlpSettings {
            traces_endpoint: Some("https://collector:4317".into()),
            headers: vec![("x-api-key".into(), "s3cr3t-value".into()), ("authorization".into(), "Bearer tok".into())],
            ..OtlpSettings::default()
        };
        let shown = format!("{s:?} {s:#?}");
        assert!(shown.contains("x-api-key=<redacted>") && shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("Bearer"), "{shown}");
    }
}
