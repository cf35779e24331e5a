//! Run a palisade stack where reqwest is.
//!
//! - [`async_openai::PalisadeService`] (feature `async-openai`): the stack as
//!   async-openai's HTTP service, for `Client::with_http_service`.
//! - [`middleware::PalisadeMiddleware`] (feature `reqwest-middleware`): the
//!   stack as one `Middleware` of a reqwest-middleware chain, so that any
//!   reqwest-based client gets it.
//!
//! Both turn a `reqwest::Request` into the stack's `http::Request<RequestBody>`
//! (method, absolute URL, headers, the body's bytes) and the stack's answer
//! into a `reqwest::Response` whose body is the stack's, read as the caller
//! reads, so streams keep working and the stack's timeouts, breaker and
//! token reconciliation see them as they are read. Errors of the stack keep
//! palisade's typed error inside the library's own error type.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "async-openai")]
pub mod async_openai;
mod conv;
#[cfg(feature = "reqwest-middleware")]
pub mod middleware;
