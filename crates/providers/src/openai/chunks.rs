//! [`OpenAiStream`]: an OpenAI chat stream over a response body, as typed
//! chunks.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use http_body::Body;
use palisade_core::BoxError;
use palisade_sse::EventStream;

use super::{OpenAiItem, decode_openai};
use crate::Api;
use crate::openai::ChatChunk;
use crate::stream::StreamError;

/// An OpenAI chat stream read from a response body, one [`ChatChunk`] at a
/// time; [`ChatChunk::text`] is a chunk's new text.
///
/// It ends after `data: [DONE]`. Every way it can fail is an `Err` item
/// (then nothing more): the body's own error (a reset, a timeout of the
/// stack), a malformed event, an in-band error event
/// ([`StreamError::inband`]), or an end without `[DONE]`
/// ([`StreamError::is_truncated`]) — a truncated answer is never taken for a
/// whole one.
///
/// ```
/// use futures_util::StreamExt;
/// use palisade_providers::OpenAiStream;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sse = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n\
///            data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n\
///            data: [DONE]\n\n";
/// // Any body: here a whole one; in practice a stack's streamed answer.
/// let mut chunks = OpenAiStream::new(http_body_util::Full::new(bytes::Bytes::from(sse)));
/// let mut text = String::new();
/// while let Some(chunk) = chunks.next().await {
///     text.push_str(chunk.unwrap().text());
/// }
/// assert_eq!(text, "Hello");
/// # }
/// ```
pub struct OpenAiStream<B> {
    events: EventStream<B>,
    done: bool,
}

impl<B> std::fmt::Debug for OpenAiStream<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<B> OpenAiStream<B> {
    /// Reads `body` as an OpenAI chat stream.
    pub fn new(body: B) -> Self {
        Self {
            events: EventStream::new(body),
            done: false,
        }
    }
}

impl<B> Stream for OpenAiStream<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Item = Result<ChatChunk, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let next = ready!(Pin::new(&mut this.events).poll_next(cx));
            let item = match next {
                Some(Ok(ev)) => match decode_openai(&ev) {
                    Ok(OpenAiItem::Chunk(c)) => return Poll::Ready(Some(Ok(c))),
                    Ok(OpenAiItem::Done) => {
                        this.done = true;
                        continue;
                    }
                    Err(e) => Err(e.into()),
                },
                Some(Err(e)) => Err(e.into()),
                None => Err(StreamError::truncated(Api::ChatCompletions).into()),
            };
            this.done = true;
            return Poll::Ready(Some(item));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures_util::StreamExt;
    use palisade_core::find;

    const CHUNK: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";

    async fn items(sse: String) -> Vec<Result<ChatChunk, BoxError>> {
        OpenAiStream::new(http_body_util::Full::new(Bytes::from(sse)))
            .collect()
            .await
    }

    #[tokio::test]
    async fn an_end_without_done_is_a_truncation_error_not_an_answer() {
        let got = items(CHUNK.to_owned()).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().text(), "hi");
        let e = got[1].as_ref().unwrap_err();
        assert!(
            find::<StreamError>(&**e).is_some_and(StreamError::is_truncated),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_inband_error_ends_the_stream_as_an_error() {
        let sse = format!(
            "{CHUNK}data: {{\"error\":{{\"message\":\"overloaded\",\"type\":\"server_error\"}}}}\n\n{CHUNK}data: [DONE]\n\n"
        );
        let got = items(sse).await;
        assert_eq!(got.len(), 2, "nothing after the error");
        let e = got[1].as_ref().unwrap_err();
        let inband = find::<StreamError>(&**e).and_then(StreamError::inband);
        assert!(
            inband.is_some_and(|i| i.message().contains("overloaded")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn done_ends_it_and_the_usage_chunk_has_no_text() {
        let usage = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n";
        let got = items(format!("{CHUNK}{usage}data: [DONE]\n\n")).await;
        let texts: Vec<&str> = got.iter().map(|c| c.as_ref().unwrap().text()).collect();
        assert_eq!(texts, ["hi", ""]);
    }
}
