//! Typed cross-shard calls: a request type names its reply type, so a handler that answers with
//! the wrong type, or a caller that expects the wrong one, does not compile (as Seastar's
//! `invoke_on` returns a typed future).
//!
//! On the wire a request travels as `Box<dyn ErasedCall>` and its answer as `Box<dyn Any>`, both
//! on the mesh link between the two shards, so replies keep their FIFO place among the other
//! entries of the link (a consume-ok before the deliveries that follow it, `Barrier`). The only
//! code that sees the erased forms is here: the receiver runs the request's own `handle`, and the
//! caller's pending entry downcasts to the reply type it registered under that request id.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use super::messages::RequestId;
use super::sync::{oneshot, OneshotReceiver, OneshotSender};
use super::Shard;
use crate::broker::ShardId;
use crate::id_hash::IdMap;

/// One cross-shard operation and the answer it gets. `handle` runs on the receiving shard (or in
/// place when the caller is that shard).
pub trait ShardCall: Send + 'static {
    type Reply: Send + 'static;
    fn handle(self, shard: &Rc<Shard>, from: ShardId) -> impl Future<Output = Self::Reply>;
}

/// A reply in transit; only [`PendingReply`] opens it.
pub type AnyReply = Box<dyn Any + Send>;

type LocalFuture = Pin<Box<dyn Future<Output = AnyReply>>>;

/// A [`ShardCall`] with its type erased, so requests of every type share the mesh link.
pub trait ErasedCall: Send {
    fn handle_erased(self: Box<Self>, shard: Rc<Shard>, from: ShardId) -> LocalFuture;
}

impl<C: ShardCall> ErasedCall for C {
    fn handle_erased(self: Box<Self>, shard: Rc<Shard>, from: ShardId) -> LocalFuture {
        Box::pin(async move {
            let reply: AnyReply = Box::new(self.handle(&shard, from).await);
            reply
        })
    }
}

/// A shard's outstanding requests, by id.
#[derive(Default)]
pub struct PendingCalls {
    next_id: Cell<RequestId>,
    pending: RefCell<IdMap<RequestId, PendingReply>>,
}

impl PendingCalls {
    /// A new request id, and where its reply of type `T` will arrive.
    pub fn register<T: Send + 'static>(&self) -> (RequestId, OneshotReceiver<T>) {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        let (pending, receiver) = PendingReply::new::<T>();
        self.pending.borrow_mut().insert(id, pending);
        (id, receiver)
    }

    /// The caller gave up on `id` (timed out): its entry goes, so abandoned calls cannot pile up.
    pub fn forget(&self, id: RequestId) {
        self.pending.borrow_mut().remove(&id);
    }

    /// Outstanding requests (for the tests).
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.pending.borrow().len()
    }

    pub fn complete(&self, id: RequestId, reply: AnyReply) {
        // A caller that timed out forgot its id: the late reply completes into nothing.
        let pending = self.pending.borrow_mut().remove(&id);
        if let Some(pending) = pending {
            pending.complete(reply);
        }
    }
}

/// The caller's side of one outstanding request: knows the reply type it waits for.
struct PendingReply {
    complete: Box<dyn FnOnce(AnyReply)>,
}

impl PendingReply {
    fn new<T: Send + 'static>() -> (PendingReply, OneshotReceiver<T>) {
        let (sender, receiver) = oneshot::<T>();
        let complete = Box::new(move |reply: AnyReply| complete_typed(sender, reply));
        (PendingReply { complete }, receiver)
    }

    fn complete(self, reply: AnyReply) {
        (self.complete)(reply)
    }
}

fn complete_typed<T: 'static>(sender: OneshotSender<T>, reply: AnyReply) {
    // Request ids are unique per (caller, link) and the receiver answers with `C::Reply` of the
    // very request it was sent under that id, so another type here is a broken mesh, not input.
    let reply = reply
        .downcast::<T>()
        .expect("a reply has the type its request declared");
    sender.send(*reply);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

    use super::*;
    use crate::broker::Topology;
    use crate::shard::mesh::{self, MeshEnds};

    /// Answers who handled it, for whom, and twice its number: a reply type of its own.
    struct Double(u64);

    #[derive(Debug, PartialEq)]
    struct Doubled {
        handled_on: ShardId,
        from: ShardId,
        value: u64,
    }

    impl ShardCall for Double {
        type Reply = Doubled;
        async fn handle(self, shard: &Rc<Shard>, from: ShardId) -> Doubled {
            // Suspends once, so the local path is shown to await like the remote one.
            glommio::yield_if_needed().await;
            Doubled {
                handled_on: shard.id(),
                from,
                value: self.0 * 2,
            }
        }
    }

    /// Ends the serving side of the test: its reply is the last thing on the link.
    struct Finish;

    impl ShardCall for Finish {
        type Reply = ();
        async fn handle(self, shard: &Rc<Shard>, _from: ShardId) {
            shard.begin_shutdown();
        }
    }

    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    fn spawn_shard<F, Fut>(id: ShardId, ends: MeshEnds, body: F) -> ExecutorJoinHandle<()>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let shard = Shard::new(id, 2, Topology::new_default());
                shard.connect_mesh(ends).await;
                body(shard).await;
            })
            .expect("spawn executor")
    }

    #[test]
    fn a_forgotten_call_leaves_no_entry_and_its_late_reply_goes_nowhere() {
        let calls = PendingCalls::default();
        let (answered, answered_receiver) = calls.register::<u32>();
        let (abandoned, _gone) = calls.register::<u32>();
        assert_eq!(calls.outstanding(), 2);
        calls.forget(abandoned);
        assert_eq!(calls.outstanding(), 1);
        calls.complete(abandoned, Box::new(7u32));
        calls.complete(answered, Box::new(8u32));
        assert_eq!(calls.outstanding(), 0);
        let reply = futures_lite::future::block_on(answered_receiver);
        assert_eq!(reply, Some(8));
    }

    #[test]
    fn typed_calls_round_trip_in_place_and_across_the_mesh() {
        let mut ends = mesh::build(2).into_iter();
        let (ends_0, ends_1) = (ends.next().unwrap(), ends.next().unwrap());
        let server = spawn_shard(0, ends_0, |shard| async move {
            let served = glommio::timer::timeout(TEST_TIMEOUT, async {
                shard.wait_for_shutdown().await;
                shard.mesh.wait_until_empty().await;
                Ok(())
            })
            .await;
            assert!(served.is_ok(), "shard 1 never finished");
        });
        let client = spawn_shard(1, ends_1, |shard| async move {
            let local = shard.call(1, Double(2)).await;
            let expected = Doubled {
                handled_on: 1,
                from: 1,
                value: 4,
            };
            assert_eq!(local, Ok(expected));
            let remote = shard.call(0, Double(21)).await;
            let expected = Doubled {
                handled_on: 0,
                from: 1,
                value: 42,
            };
            assert_eq!(remote, Ok(expected));
            assert_eq!(shard.call(0, Finish).await, Ok(()));
        });
        client.join().expect("client shard");
        server.join().expect("server shard");
    }
}
