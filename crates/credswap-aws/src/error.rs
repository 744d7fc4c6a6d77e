//! How failures of the Secrets Manager API become [`SourceError`]s.
//!
//! | what happened | kind |
//! |---|---|
//! | throttling (`ThrottlingException`, `TooManyRequestsException`, HTTP 429), HTTP 5xx (`InternalServiceError`), a timeout, a connection or I/O failure, an unreadable response | [`unavailable`](SourceError::unavailable): the provider keeps serving the last good credential and tries again |
//! | `AccessDeniedException`, `UnrecognizedClientException`, bad or expired signatures and tokens, `DecryptionFailure` and other KMS refusals, HTTP 401/403 | [`denied`](SourceError::denied) |
//! | `ResourceNotFoundException` (no such secret, or no version with the stage), `InvalidRequestException` (e.g. the secret is scheduled for deletion), `InvalidParameterException`, a request that could not be built (no region, no credentials), anything else | [`other`](SourceError::other) |
//!
//! Messages name the operation, the secret id, the AWS error code, its message and the HTTP
//! status. AWS error messages never carry secret values; a response that could not be read is
//! reported without any of its content.

use std::error::Error as StdError;
use std::fmt;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use credswap_core::SourceError;

const UNAVAILABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
];

const DENIED_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredTokenException",
    "ExpiredToken",
    "DecryptionFailure",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
];

/// The AWS error code of a missing secret or secret version.
pub(crate) const NOT_FOUND: &str = "ResourceNotFoundException";

/// Whether `err` is a service error with this AWS error code.
pub(crate) fn has_code<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
    code: &str,
) -> bool {
    matches!(err, SdkError::ServiceError(s) if s.err().code() == Some(code))
}

/// Classifies a failed call of `operation` on `secret_id`.
pub(crate) fn classify<E>(
    operation: &str,
    secret_id: &str,
    err: &SdkError<E, HttpResponse>,
) -> SourceError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let what = format!("{operation} of secret \"{secret_id}\"");
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code();
            let status = service.raw().status().as_u16();
            let message = format!(
                "{what} failed: {}: {} (HTTP {status})",
                code.unwrap_or("(no error code)"),
                service.err().message().unwrap_or("(no message)")
            );
            let in_list = |list: &[&str]| code.is_some_and(|c| list.contains(&c));
            if in_list(UNAVAILABLE_CODES) || status == 429 || status >= 500 {
                SourceError::unavailable(message)
            } else if in_list(DENIED_CODES) || status == 401 || status == 403 {
                SourceError::denied(message)
            } else {
                SourceError::other(message)
            }
        }
        SdkError::TimeoutError(_) => {
            SourceError::unavailable(format!("{what} timed out")).with_source(Context::of(err))
        }
        SdkError::DispatchFailure(_) => {
            SourceError::unavailable(format!("{what} could not be sent (connection failed)"))
                .with_source(Context::of(err))
        }
        // The raw response may hold the secret: report nothing of it.
        SdkError::ResponseError(_) => {
            SourceError::unavailable(format!("{what} failed: the response could not be read"))
        }
        SdkError::ConstructionFailure(_) => SourceError::other(format!(
            "{what} could not be built (check the region and the credentials)"
        ))
        .with_source(Context::of(err)),
        _ => SourceError::other(format!("{what} failed")).with_source(Context::of(err)),
    }
}

/// The error chain of a failure that carries no response, as text.
#[derive(Debug)]
struct Context(String);

impl Context {
    fn of<E: StdError + 'static>(err: &SdkError<E, HttpResponse>) -> Self {
        Context(DisplayErrorContext(err).to_string())
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Context {}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(
        code: Option<&str>,
        status: u16,
    ) -> SdkError<GetSecretValueError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("m");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        let err = GetSecretValueError::generic(meta.build());
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn service_errors_by_code_and_status() {
        let c = |code, status| classify("GetSecretValue", "db", &service_error(code, status));
        assert!(c(Some("ThrottlingException"), 400).is_unavailable());
        assert!(c(Some("TooManyRequestsException"), 400).is_unavailable());
        assert!(c(None, 429).is_unavailable());
        assert!(c(Some("InternalServiceError"), 500).is_unavailable());
        assert!(c(None, 503).is_unavailable());
        assert!(c(Some("AccessDeniedException"), 400).is_denied());
        assert!(c(Some("UnrecognizedClientException"), 400).is_denied());
        assert!(c(Some("DecryptionFailure"), 400).is_denied());
        assert!(c(None, 403).is_denied());
        let missing = c(Some(NOT_FOUND), 400);
        assert!(!missing.is_denied() && !missing.is_unavailable() && !missing.is_malformed());
        assert_eq!(
            missing.to_string(),
            "credential source failed: GetSecretValue of secret \"db\" failed: \
             ResourceNotFoundException: m (HTTP 400)"
        );
        assert!(has_code(&service_error(Some(NOT_FOUND), 400), NOT_FOUND));
    }
}
