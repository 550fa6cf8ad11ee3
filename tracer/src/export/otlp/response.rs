//! The collector's answer to an export: OTLP's partial success, where the collector accepts the
//! request but says it rejected some of its spans (or warns, with none rejected); and, for a
//! failed export, how long the collector asks the exporter to wait before a retry.

use std::time::Duration;

/// `opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportTraceServiceResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<ExportTracePartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExportTracePartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_spans: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// The longest collector message quoted in the log.
const MAX_MESSAGE: usize = 200;

/// What the collector said it did not take.
#[derive(Debug, PartialEq)]
pub(super) struct PartialSuccess {
    /// Spans rejected, at most the request's `spans`.
    pub rejected: u64,
    /// The collector's reason, one line, at most [`MAX_MESSAGE`] characters.
    pub message: String,
}

/// Reads an encoded `ExportTraceServiceResponse` for a request of `spans` spans. `None` when
/// everything was accepted without a word (an empty answer is that too).
pub(super) fn partial_success(body: &[u8], spans: usize) -> Result<Option<PartialSuccess>, prost::DecodeError> {
    let resp = <ExportTraceServiceResponse as prost::Message>::decode(body)?;
    let Some(p) = resp.partial_success else {
        return Ok(None);
    };
    if p.rejected_spans <= 0 && p.error_message.is_empty() {
        return Ok(None);
    }
    // A collector's count is not trusted past what was sent.
    let rejected = (p.rejected_spans.max(0) as u64).min(spans as u64);
    let message = p.error_message.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_MESSAGE).collect();
    Ok(Some(PartialSuccess { rejected, message }))
}

/// `google.rpc.Status`, which a gRPC server may send in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The retry delay of a `google.rpc.RetryInfo` among a failed gRPC call's status details (the
/// bytes of `grpc-status-details-bin`), as OTLP/gRPC servers give it to throttle exporters.
/// None when there is none, or it cannot be read, or it is negative.
pub(super) fn grpc_retry_delay(status_details: &[u8]) -> Option<Duration> {
    if status_details.is_empty() {
        return None;
    }
    let status = <RpcStatus as prost::Message>::decode(status_details).ok()?;
    let info = status.details.iter().find(|d| d.type_url == RETRY_INFO_TYPE)?;
    let delay = <RetryInfo as prost::Message>::decode(info.value.as_slice()).ok()?.retry_delay?;
    let seconds = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok().filter(|&n| n < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos))
}

/// `grpc-status-details-bin` asking for a retry after `delay`, as a throttling server sends it.
#[cfg(test)]
pub(super) fn retry_info_details(delay: Duration) -> Vec<u8> {
    use prost::Message;
    let delay = ProtoDuration { seconds: delay.as_secs() as i64, nanos: delay.subsec_nanos() as i32 };
    let value = RetryInfo { retry_delay: Some(delay) }.encode_to_vec();
    RpcStatus { details: vec![ProtoAny { type_url: RETRY_INFO_TYPE.into(), value }] }.encode_to_vec()
}

/// An HTTP `Retry-After` value in seconds, as OTLP/HTTP servers send with 429 and 503. The
/// HTTP-date form is not read (the exporter's own backoff applies then).
pub(super) fn http_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1 as pb;
    use prost::Message;

    fn answer(partial: Option<(i64, &str)>) -> Vec<u8> {
        pb::ExportTraceServiceResponse {
            partial_success: partial.map(|(rejected_spans, msg)| pb::ExportTracePartialSuccess {
                rejected_spans,
                error_message: msg.into(),
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn full_success_says_nothing() {
        assert_eq!(partial_success(&[], 10), Ok(None));
        assert_eq!(partial_success(&answer(None), 10), Ok(None));
        assert_eq!(partial_success(&answer(Some((0, ""))), 10), Ok(None));
    }

    #[test]
    fn rejected_spans_and_reason() {
        let p = partial_success(&answer(Some((3, "span too large\nsee limits"))), 10).unwrap();
        assert_eq!(p, Some(PartialSuccess { rejected: 3, message: "span too large see limits".into() }));
        // A warning without rejections is still reported.
        let p = partial_success(&answer(Some((0, "deprecated field"))), 10).unwrap();
        assert_eq!(p, Some(PartialSuccess { rejected: 0, message: "deprecated field".into() }));
    }

    #[test]
    fn counts_are_bounded_by_the_request() {
        let p = partial_success(&answer(Some((1_000, ""))), 10).unwrap().unwrap();
        assert_eq!(p.rejected, 10);
        let p = partial_success(&answer(Some((-5, "odd"))), 10).unwrap().unwrap();
        assert_eq!(p.rejected, 0);
        let long = "x".repeat(5_000);
        let p = partial_success(&answer(Some((1, &long))), 10).unwrap().unwrap();
        assert_eq!(p.message.len(), MAX_MESSAGE);
    }

    /// A status as a gRPC server sends it: `google.rpc.Status` with `Any` details.
    fn status_details(details: &[(&str, Vec<u8>)]) -> Vec<u8> {
        RpcStatus {
            details: details.iter().map(|(t, v)| ProtoAny { type_url: (*t).into(), value: v.clone() }).collect(),
        }
        .encode_to_vec()
    }

    fn retry_info(seconds: i64, nanos: i32) -> Vec<u8> {
        RetryInfo { retry_delay: Some(ProtoDuration { seconds, nanos }) }.encode_to_vec()
    }

    #[test]
    fn grpc_retry_info_is_read_among_other_details() {
        let other = ("type.googleapis.com/google.rpc.ErrorInfo", vec![0x0a, 0x01, b'x']);
        let details = status_details(&[other.clone(), (RETRY_INFO_TYPE, retry_info(2, 500_000_000))]);
        assert_eq!(grpc_retry_delay(&details), Some(Duration::from_millis(2_500)));
        assert_eq!(grpc_retry_delay(&[]), None);
        assert_eq!(grpc_retry_delay(&status_details(&[other])), None);
        assert_eq!(grpc_retry_delay(&status_details(&[(RETRY_INFO_TYPE, retry_info(-1, 0))])), None);
        assert_eq!(grpc_retry_delay(&status_details(&[(RETRY_INFO_TYPE, vec![0x0a, 0xff])])), None);
        assert_eq!(grpc_retry_delay(&[0x1a, 0xff]), None);
    }

    #[test]
    fn http_retry_after_in_seconds() {
        assert_eq!(http_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(http_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(http_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(http_retry_after("-1"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(partial_success(&[0x0a, 0xff], 10).is_err());
        assert!(partial_success(&[0x0a, 0x02, 0x12, 0x05], 10).is_err());
        // Invalid UTF-8 in the message.
        assert!(partial_success(&[0x0a, 0x04, 0x12, 0x02, 0xff, 0xfe], 10).is_err());
    }
}
