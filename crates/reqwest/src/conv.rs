//! Between reqwest's types and the stack's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use palisade_core::{BoxError, RequestBody};
use sync_wrapper::SyncWrapper;

/// A reqwest request as the stack's: method, absolute URL, headers, the
/// body's bytes (`Err` naming why not, for a streamed body or a URL that is
/// no URI).
pub(crate) fn to_http(req: &reqwest::Request) -> Result<http::Request<RequestBody>, String> {
    let body = match req.body() {
        None => RequestBody::empty(),
        Some(b) => match b.as_bytes() {
            Some(bytes) => RequestBody::from(Bytes::copy_from_slice(bytes)),
            None => {
                return Err(
                    "this request's body is streamed (a multipart upload?); a palisade stack needs its bytes to retry it: send it without palisade".to_owned(),
                );
            }
        },
    };
    let mut out = http::Request::new(body);
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req
        .url()
        .as_str()
        .parse()
        .map_err(|e| format!("the URL `{}` is not a valid URI: {e}", req.url()))?;
    *out.headers_mut() = req.headers().clone();
    Ok(out)
}

/// A body that is `Sync` whatever it wraps (reqwest's body must be; the
/// stack's boxed body is only `Send`): it is only ever polled through
/// `&mut`, so no lock is needed.
pub(crate) struct SyncBody<B> {
    inner: SyncWrapper<Pin<Box<B>>>,
    hint: SizeHint,
    end: bool,
}

impl<B: Body> SyncBody<B> {
    pub(crate) fn new(body: B) -> Self {
        let (hint, end) = (body.size_hint(), body.is_end_stream());
        Self {
            inner: SyncWrapper::new(Box::pin(body)),
            hint,
            end,
        }
    }
}

impl<B> Body for SyncBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = this.inner.get_mut().as_mut().poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.end = true;
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.end
    }

    fn size_hint(&self) -> SizeHint {
        // The hint from before the first frame: exact only when the body
        // was a single known-length chunk, which is what it matters for.
        if self.end {
            SizeHint::with_exact(0)
        } else {
            self.hint
        }
    }
}

/// The stack's answer as a reqwest response (its body read as the caller
/// reads).
pub(crate) fn to_reqwest<B>(res: http::Response<B>) -> reqwest::Response
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    reqwest::Response::from(res.map(|b| reqwest::Body::wrap(SyncBody::new(b))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_keep_method_url_headers_and_body() {
        let mut r = reqwest::Request::new(
            http::Method::POST,
            "http://127.0.0.1:9/v1/chat/completions".parse().unwrap(),
        );
        r.headers_mut()
            .insert("authorization", "Bearer test-key".parse().unwrap());
        *r.body_mut() = Some(reqwest::Body::from(r#"{"model":"m"}"#));
        let h = to_http(&r).unwrap();
        assert_eq!(h.method(), http::Method::POST);
        assert_eq!(
            h.uri().to_string(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(h.headers()["authorization"], "Bearer test-key");
        assert_eq!(h.body().as_bytes().as_ref(), br#"{"model":"m"}"#);
    }
}
