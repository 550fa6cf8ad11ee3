//! The collector's answer to an export: OTLP's partial success, where the collector accepts the
//! request but says it rejected some of its spans (or warns, with none rejected).

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

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(partial_success(&[0x0a, 0xff], 10).is_err());
        assert!(partial_success(&[0x0a, 0x02, 0x12, 0x05], 10).is_err());
        // Invalid UTF-8 in the message.
        assert!(partial_success(&[0x0a, 0x04, 0x12, 0x02, 0xff, 0xfe], 10).is_err());
    }
}
