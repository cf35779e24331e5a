//! [`GatewayError`]: every answer the gateway gives in place of an
//! upstream, formatted once, in the caller's API's error format (the bodies
//! come from [`Api::error_json`]).

use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use palisade_core::Rejected;
use palisade_providers::{Api, KeyStyle};

/// An error the gateway answers itself: a refused request, a route with no
/// usable target, a failure of the gateway's own.
///
/// It is an [`IntoResponse`]: the status, the body in the caller's API's
/// format, and `Retry-After` when there is a wait to advise. Constructors
/// name each case, with the message a caller reads (what failed, what to
/// do).
#[derive(Debug)]
pub(crate) struct GatewayError {
    api: Api,
    status: StatusCode,
    message: String,
    param: Option<String>,
    retry_after: Option<Duration>,
}

impl GatewayError {
    /// `status` with `message`, in `api`'s format.
    pub(crate) fn new(api: Api, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            api,
            status,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// Names the offending field (`param` in OpenAI's format).
    #[must_use]
    pub(crate) fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Advises a wait (`Retry-After`, whole seconds rounded up).
    #[must_use]
    pub(crate) fn retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    /// No inbound key, or not one of the configured ones (401).
    pub(crate) fn unauthorized(api: Api) -> Self {
        Self::new(
            api,
            StatusCode::UNAUTHORIZED,
            format!(
                "missing or invalid API key for this gateway: send `{}` (or `{}`) with one of the keys it was configured with",
                api.key_style().hint(),
                match api.key_style() {
                    KeyStyle::Bearer => KeyStyle::XApiKey.hint(),
                    KeyStyle::XApiKey => KeyStyle::Bearer.hint(),
                }
            ),
        )
    }

    /// A body that does not say it is JSON (415); `got` is its
    /// `Content-Type`, if any.
    pub(crate) fn not_json(api: Api, got: Option<String>) -> Self {
        let got = match got {
            Some(t) => format!("got `{t}`"),
            None => "the request has no Content-Type".to_owned(),
        };
        Self::new(
            api,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "this endpoint takes a JSON body: send `Content-Type: application/json` ({got})"
            ),
        )
    }

    /// A body over `max_body_bytes` (413).
    pub(crate) fn too_large(api: Api, limit: usize) -> Self {
        Self::new(
            api,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is over this gateway's limit of {limit} bytes (max_body_bytes); send a smaller request"
            ),
        )
    }

    /// A body of more than `max_json_values` values (413).
    pub(crate) fn too_many_values(api: Api, limit: u64) -> Self {
        Self::new(
            api,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body holds more than {limit} JSON values, this gateway's limit (max_json_values); send fewer messages or content parts"
            ),
        )
    }

    /// A body that did not arrive within `body_read_timeout` (408).
    pub(crate) fn body_timeout(api: Api, waited: Duration) -> Self {
        Self::new(
            api,
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms (body_read_timeout); send it at once",
                waited.as_millis()
            ),
        )
    }

    /// Shutdown started while the request body was arriving (503): the
    /// caller may send it again, to another instance.
    pub(crate) fn shutting_down(api: Api) -> Self {
        Self::new(
            api,
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is shutting down and did not take this request; send it again",
        )
        .retry_after(Some(Duration::from_secs(1)))
    }

    /// A body that is not JSON or breaks the caller's API's schema (400),
    /// every violation listed, the first one's pointer as `param`.
    pub(crate) fn rejected(api: Api, rejected: &Rejected) -> Self {
        let err = Self::new(
            api,
            StatusCode::BAD_REQUEST,
            palisade_schema::rejection_message(rejected),
        );
        match palisade_schema::rejection_param(rejected) {
            Some(p) => err.param(p),
            None => err,
        }
    }

    /// A model no route serves (404), naming those it serves.
    pub(crate) fn unknown_model(api: Api, model: &str, served: &[String]) -> Self {
        Self::new(
            api,
            StatusCode::NOT_FOUND,
            format!(
                "the model `{model}` is not served by this gateway; it serves: {}",
                served.join(", ")
            ),
        )
        .param("model")
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response<Body> {
        let body = self
            .api
            .error_json(self.status, &self.message, self.param.as_deref())
            .to_string();
        let mut res = Response::new(Body::from(body));
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(d) = self.retry_after {
            h.insert(
                RETRY_AFTER,
                HeaderValue::from(palisade_core::retry_after_header_secs(d)),
            );
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let res = GatewayError::new(Api::Messages, StatusCode::SERVICE_UNAVAILABLE, "wait")
            .retry_after(Some(Duration::from_millis(1500)))
            .into_response();
        assert_eq!(res.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn formatted_once_in_the_callers_api() {
        let res = GatewayError::unknown_model(Api::Messages, "x", &["a".into()]).into_response();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = GatewayError::new(Api::ChatCompletions, StatusCode::TOO_MANY_REQUESTS, "wait")
            .retry_after(Some(Duration::from_millis(200)))
            .into_response();
        assert_eq!(res.headers()[RETRY_AFTER], "1");
    }
}
