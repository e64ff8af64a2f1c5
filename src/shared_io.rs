//! One executor-local byte stream polled from two places: a connection's reader and writer
//! tasks (`net::SharedStream`), or the listening and sending halves of a cluster link raced in
//! one task (`cluster::link`). Both used to carry their own copy of this adapter.
//!
//! glommio keeps separate read and write readiness state, and each poll borrows the stream only
//! for its own duration (never across an `.await`), so the two users never hold the borrow at
//! the same time.

use std::cell::{Ref, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// A stream shared by cloning the handle; `S` may be unsized (`dyn net::ClientStream`).
pub struct SharedIo<S: ?Sized>(Rc<RefCell<S>>);

impl<S: ?Sized> Clone for SharedIo<S> {
    fn clone(&self) -> Self {
        SharedIo(self.0.clone())
    }
}

impl<S> SharedIo<S> {
    pub fn new(stream: S) -> SharedIo<S> {
        SharedIo(Rc::new(RefCell::new(stream)))
    }
}

impl<S: ?Sized> SharedIo<S> {
    /// Wraps a stream already behind its `Rc<RefCell<_>>`: how an unsized `S` is made, by
    /// coercing `Rc<RefCell<T>>` at the call site.
    pub fn from_rc(stream: Rc<RefCell<S>>) -> SharedIo<S> {
        SharedIo(stream)
    }

    /// The stream, for its non-I/O methods (addresses, timeouts); never held across an `.await`.
    pub fn get(&self) -> Ref<'_, S> {
        self.0.borrow()
    }
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for SharedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for SharedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}
