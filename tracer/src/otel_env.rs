//! The collector settings from the flags (and their `TRACER_*` variables), then the standard
//! `OTEL_EXPORTER_OTLP_*` variables of the OTLP exporter specification, then the defaults.
//!
//! Each setting is looked up per signal first (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`), then in its
//! generic form (`OTEL_EXPORTER_OTLP_HEADERS`); an empty variable counts as unset. Endpoints follow
//! the specification's path rules: for OTLP/HTTP the generic endpoint is a base URL that gets
//! `v1/traces` or `v1/metrics` appended, a per-signal one is used as is; gRPC endpoints have no
//! path. `--otlp-endpoint` keeps its own rule: for OTLP/HTTP a URL without a path gets `/v1/traces`.
//!
//! The lookup is a parameter, so that the tests give a table instead of the process environment.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::cli::{Cli, CompressionArg, ProtocolArg};
use crate::export::{OtlpProtocol, OtlpSettings, TlsFiles};

/// The collector settings of each signal, and the attributes added to every exported resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtlpConfig {
    /// Only `traces_endpoint` is set here.
    pub traces: OtlpSettings,
    /// Only `metrics_endpoint` is set here.
    pub metrics: OtlpSettings,
    /// `OTEL_RESOURCE_ATTRIBUTES`, in order.
    pub resource: Vec<(String, String)>,
}

#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn infix(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES_",
            Signal::Metrics => "METRICS_",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Signal::Traces => "v1/traces",
            Signal::Metrics => "v1/metrics",
        }
    }
}

/// Resolves the settings from `cli` and the variables `env` returns.
pub fn resolve(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<OtlpConfig> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let resource = match env("OTEL_RESOURCE_ATTRIBUTES") {
        Some(v) => key_values(&v, "OTEL_RESOURCE_ATTRIBUTES", true)?,
        None => Vec::new(),
    };
    Ok(OtlpConfig {
        traces: signal_settings(cli, Signal::Traces, &env)?,
        metrics: signal_settings(cli, Signal::Metrics, &env)?,
        resource,
    })
}

fn signal_settings(cli: &Cli, signal: Signal, env: &dyn Fn(&str) -> Option<String>) -> Result<OtlpSettings> {
    // The per-signal variable, else the generic one: (name, value).
    let var = |setting: &str| -> Option<(String, String)> {
        [format!("OTEL_EXPORTER_OTLP_{}{setting}", signal.infix()), format!("OTEL_EXPORTER_OTLP_{setting}")]
            .into_iter()
            .find_map(|name| env(&name).map(|v| (name, v.trim().to_owned())))
    };
    let protocol = match (cli.otlp_protocol, var("PROTOCOL")) {
        (Some(ProtocolArg::Grpc), _) => OtlpProtocol::Grpc,
        (Some(ProtocolArg::Http), _) => OtlpProtocol::Http,
        (None, None) => OtlpProtocol::Grpc,
        (None, Some((name, v))) => match v.as_str() {
            "grpc" => OtlpProtocol::Grpc,
            "http/protobuf" | "http" => OtlpProtocol::Http,
            _ => bail!("{name}={v:?} is not supported: use grpc or http/protobuf"),
        },
    };
    let endpoint = endpoint(cli, signal, protocol, env);
    let mut headers = match var("HEADERS") {
        Some((name, v)) => key_values(&v, &name, true)?,
        None => Vec::new(),
    };
    if !cli.otlp_headers.is_empty() {
        let flags: Vec<(String, String)> = cli
            .otlp_headers
            .iter()
            .map(|h| key_values(&h.0, "--otlp-header", false).map(|mut kv| kv.remove(0)))
            .collect::<Result<_>>()?;
        headers.retain(|(k, _)| !flags.iter().any(|(f, _)| f.eq_ignore_ascii_case(k)));
        headers.extend(flags);
    }
    let timeout = match (cli.otlp_timeout, var("TIMEOUT")) {
        (Some(t), _) => t,
        (None, Some((name, v))) => match v.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => bail!("{name}={v:?} is not a timeout in milliseconds above zero"),
        },
        (None, None) => OtlpSettings::default().timeout,
    };
    let gzip = match (cli.otlp_compression, var("COMPRESSION")) {
        (Some(c), _) => c == CompressionArg::Gzip,
        (None, None) => false,
        (None, Some((name, v))) => match v.as_str() {
            "gzip" => true,
            "none" => false,
            _ => bail!("{name}={v:?} is not supported: use gzip or none"),
        },
    };
    let file = |flag: &Option<PathBuf>, setting: &str| flag.clone().or_else(|| var(setting).map(|(_, v)| v.into()));
    let tls = TlsFiles {
        ca: file(&cli.otlp_ca, "CERTIFICATE"),
        client_cert: file(&cli.otlp_client_cert, "CLIENT_CERTIFICATE"),
        client_key: file(&cli.otlp_client_key, "CLIENT_KEY"),
    };
    let (traces_endpoint, metrics_endpoint) = match signal {
        Signal::Traces => (endpoint, None),
        Signal::Metrics => (None, endpoint),
    };
    Ok(OtlpSettings { traces_endpoint, metrics_endpoint, protocol, headers, timeout, gzip, tls })
}

/// The signal's endpoint: the per-signal variable as is; else the flag (for traces as given, the
/// export applying its path rule; for metrics only when it has no path); else the generic
/// variable, for OTLP/HTTP with the signal's path appended.
fn endpoint(cli: &Cli, signal: Signal, protocol: OtlpProtocol, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let per_signal = env(&format!("OTEL_EXPORTER_OTLP_{}ENDPOINT", signal.infix())).map(|v| v.trim().to_owned());
    let base = |url: &str| match protocol {
        OtlpProtocol::Grpc => url.to_owned(),
        OtlpProtocol::Http => format!("{}/{}", url.trim_end_matches('/'), signal.path()),
    };
    let flag = cli.otlp_endpoint.as_deref().map(str::trim).and_then(|url| match signal {
        Signal::Traces => Some(url.to_owned()),
        Signal::Metrics => has_no_path(url).then(|| base(url)),
    });
    let generic = || env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|v| base(v.trim()));
    match signal {
        // The flag names the traces endpoint: it goes before the per-signal variable.
        Signal::Traces => flag.or(per_signal).or_else(generic),
        Signal::Metrics if cli.otlp_endpoint.is_some() => per_signal.or(flag),
        Signal::Metrics => per_signal.or_else(generic),
    }
}

fn has_no_path(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').is_none_or(|i| &rest[i..] == "/")
}

/// A W3C-baggage-like list, `k1=v1,k2=v2`; with `decode`, keys and values are percent-decoded.
/// Errors name the entry by its position and never quote it (it may hold a credential).
fn key_values(list: &str, source: &str, decode: bool) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, entry) in list.split(',').enumerate().filter(|(_, e)| !e.trim().is_empty()) {
        let bad = |why: &str| anyhow!("{source}: entry {} {why}", i + 1);
        let (k, v) = entry.split_once('=').ok_or_else(|| bad("is not key=value"))?;
        let text = |s: &str, what: &str| -> Result<String> {
            let s = s.trim();
            if !decode {
                return Ok(s.to_owned());
            }
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| bad(&format!("has a {what} that is not UTF-8 once percent-decoded")))
        };
        let key = text(k, "key")?;
        if key.is_empty() {
            return Err(bad("has an empty key"));
        }
        out.push((key, text(v, "value")?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
