//! The HTTP/1.1 server under the management API: hyper's connection state machine driven on a
//! glommio executor, one task per connection.
//!
//! hyper does the HTTP (parsing, keep-alive, chunked bodies, header bounds); this file only
//! adapts glommio's futures-lite streams and timers to hyper's `rt` traits, bounds what a client
//! can make the server hold, and turns hyper's request into the API's plain [`Request`].

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::api::{Api, Request, Response};
use crate::limits::{
    MANAGEMENT_ACCEPT_ERROR_PAUSE, MANAGEMENT_CONNECTIONS_MAX, MANAGEMENT_HEADERS_MAX,
    MANAGEMENT_HEADER_BUFFER_BYTES, MANAGEMENT_HEADER_READ_TIMEOUT,
    MANAGEMENT_REQUEST_BODY_BYTES_MAX,
};

/// A futures-lite stream (glommio's `TcpStream`) seen through hyper's I/O traits.
pub struct HyperIo<S>(pub S);

impl<S: AsyncRead + Unpin> hyper::rt::Read for HyperIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the bytes are zeroed before they are handed out as initialised, so the reader
        // never sees uninitialised memory; `advance` covers only what it reported as written.
        let unfilled = unsafe { buf.as_mut() };
        for byte in unfilled.iter_mut() {
            byte.write(0);
        }
        let slice = unsafe { &mut *(unfilled as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
        match Pin::new(&mut self.0).poll_read(cx, slice) {
            Poll::Ready(Ok(read)) => {
                let read = read.min(slice.len());
                unsafe { buf.advance(read) };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// hyper's timer (for the header read timeout) on glommio's timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioTimer;

/// A glommio timer made to pass hyper's `Send + Sync` bound on `Sleep`.
struct GlommioSleep(glommio::timer::Timer);

// SAFETY: hyper's `Sleep` must be `Send + Sync` because hyper's connection may run on a
// work-stealing runtime. Here the connection future is spawned with `spawn_local` on one glommio
// executor and never leaves its thread, so the timer it creates is created, polled and dropped
// on that thread only; nothing shares it.
unsafe impl Send for GlommioSleep {}
unsafe impl Sync for GlommioSleep {}

impl Future for GlommioSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl hyper::rt::Sleep for GlommioSleep {}

impl hyper::rt::Timer for GlommioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(GlommioSleep(glommio::timer::Timer::new(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }
}

/// The server's bounds; [`ServerOptions::default`] takes them from `limits`. Tests shorten the
/// timeout to see it fire.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    pub connections_max: usize,
    pub request_body_bytes_max: usize,
    pub header_read_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            connections_max: MANAGEMENT_CONNECTIONS_MAX,
            request_body_bytes_max: MANAGEMENT_REQUEST_BODY_BYTES_MAX,
            header_read_timeout: MANAGEMENT_HEADER_READ_TIMEOUT,
        }
    }
}

/// What answers a request: the management API or the Prometheus endpoint.
pub trait Handler {
    fn handle(&self, request: Request) -> impl Future<Output = Response>;
}

impl Handler for Api {
    fn handle(&self, request: Request) -> impl Future<Output = Response> {
        Api::handle(self, request)
    }
}

impl Handler for super::prometheus::Metrics {
    fn handle(&self, request: Request) -> impl Future<Output = Response> {
        super::prometheus::Metrics::handle(self, request)
    }
}

/// Accepts until `stop` resolves, one task per connection, at most `connections_max` at once
/// (more are closed at accept: the client sees a reset and retries, as with any full server).
pub async fn serve(
    listener: glommio::net::TcpListener,
    api: Rc<Api>,
    options: ServerOptions,
    stop: impl Future<Output = ()>,
) {
    let open = Rc::new(Cell::new(0usize));
    let accept = async {
        loop {
            let stream = match listener.accept().await {
                Ok(stream) => stream,
                Err(error) => {
                    // Out of descriptors, usually: pause rather than spin on the same error.
                    tracing::warn!(%error, "management accept failed");
                    glommio::timer::sleep(MANAGEMENT_ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            if open.get() >= options.connections_max {
                tracing::warn!("management connection limit reached, refusing a connection");
                continue;
            }
            let _ = stream.set_nodelay(true);
            open.set(open.get() + 1);
            let guard = OpenGuard(open.clone());
            let api = api.clone();
            glommio::spawn_local(async move {
                serve_connection(stream, api, options).await;
                drop(guard);
            })
            .detach();
        }
    };
    futures_lite::future::or(accept, stop).await;
}

/// Counts a connection out however its task ends.
struct OpenGuard(Rc<Cell<usize>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Serves one connection until the client closes it, an error, or the header read timeout.
pub async fn serve_connection<S, H>(stream: S, api: Rc<H>, options: ServerOptions)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    H: Handler + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let api = api.clone();
        async move {
            let response = handle(&*api, request, options.request_body_bytes_max).await;
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(GlommioTimer)
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MANAGEMENT_HEADER_BUFFER_BYTES)
        .max_headers(MANAGEMENT_HEADERS_MAX);
    if let Err(error) = builder.serve_connection(HyperIo(stream), service).await {
        tracing::debug!(%error, "management connection ended");
    }
}

async fn handle<H: Handler>(
    api: &H,
    request: hyper::Request<Incoming>,
    body_bytes_max: usize,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, body_bytes_max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let response = if error.is::<http_body_util::LengthLimitError>() {
                Response::error(413, "bad_request", "request body too large")
            } else {
                Response::error(400, "bad_request", "unreadable request body")
            };
            return into_hyper(response);
        }
    };
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let request = Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        authorization: header(hyper::header::AUTHORIZATION),
        x_reason: header(hyper::header::HeaderName::from_static("x-reason")),
        body,
    };
    into_hyper(api.handle(request).await)
}

fn into_hyper(response: Response) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(response.body)))
        .unwrap_or_else(|_| {
            let mut fallback = hyper::Response::new(Full::new(Bytes::new()));
            *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
}
