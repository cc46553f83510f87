//! A request body with a deadline: it must arrive whole within `http.body_read_timeout_secs` of
//! its header. Without it, a client that sends a header and then trickles or withholds the body
//! holds a request in flight, and so a connection slot, for ever (the listener never cuts off a
//! request in flight). Every route's body goes through it; `read_body` answers an expired one
//! with `408 body_timeout`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// The body did not arrive within the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive whole within {0} s (http.body_read_timeout_secs)")]
pub(crate) struct BodyTimedOut(pub u64);

/// `inner`, refused with [`BodyTimedOut`] once `limit` has passed since it was wrapped.
pub(crate) struct Deadline<B> {
    inner: Pin<Box<B>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl<B> Deadline<B> {
    pub(crate) fn new(inner: B, limit: Duration) -> Deadline<B> {
        Deadline {
            inner: Box::pin(inner),
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit.as_secs())))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `e` (or an error it wraps) is a [`BodyTimedOut`].
pub(crate) fn timed_out<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimedOut> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<BodyTimedOut>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}
