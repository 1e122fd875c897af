//! A request: one bio in flight, its tag, its state and its reference
//! count.
//!
//! The state goes idle -> in flight -> complete, each step once (a compare
//! and swap): a second completion of the same request is refused and
//! counted, never run. The reference count starts at 1 (the submission's);
//! an iterator over in-flight requests takes one more with `inc_not_zero`
//! and re-checks the tag, so it never looks at a request whose tag was
//! freed and reused. The last put frees the tag and leaves the queue.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::queue::RequestQueue;
use super::{BioDone, BlkError, EndIo, Op};
use crate::arch::lock::IrqSpinLock;

/// Where a request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    /// Allocated, not yet handed to the driver.
    Idle,
    /// Handed to the driver.
    InFlight,
    /// Completed (its end_io has run or is running).
    Complete,
}

const IDLE: u8 = 0;
const IN_FLIGHT: u8 = 1;
const COMPLETE: u8 = 2;

/// One request (see the module documentation).
pub struct Request {
    /// Unique for the life of the kernel.
    pub id: u64,
    /// Its tag in its hardware queue's map.
    pub tag: usize,
    /// Its hardware queue.
    pub hctx: usize,
    /// Read or write.
    pub op: Op,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Bytes.
    pub len: usize,
    /// When it entered the queue (ns).
    pub start_ns: u64,
    /// The CPU it was submitted on.
    pub submit_cpu: usize,
    state: AtomicU8,
    refs: AtomicU32,
    /// The bio's buffer (the driver copies to or from it). Interrupts-off
    /// locks, as `end_io`'s: a remote completion takes them in the
    /// device-completion interrupt (see `complete`).
    pub(crate) data: IrqSpinLock<Vec<u8>>,
    end_io: IrqSpinLock<Option<EndIo>>,
    pub(crate) queue: Arc<RequestQueue>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Request {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        queue: Arc<RequestQueue>,
        hctx: usize,
        tag: usize,
        op: Op,
        offset: u64,
        data: Vec<u8>,
        end_io: EndIo,
        start_ns: u64,
    ) -> Self {
        Request {
            // Relaxed: only uniqueness matters.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tag,
            hctx,
            op,
            offset,
            len: data.len(),
            start_ns,
            submit_cpu: crate::arch::cpu_id(),
            state: AtomicU8::new(IDLE),
            refs: AtomicU32::new(1),
            data: IrqSpinLock::new(data),
            end_io: IrqSpinLock::new(Some(end_io)),
            queue,
        }
    }

    /// The current state.
    pub fn state(&self) -> RequestState {
        // Acquire: a caller that sees Complete sees the completion's work.
        match self.state.load(Ordering::Acquire) {
            IDLE => RequestState::Idle,
            IN_FLIGHT => RequestState::InFlight,
            _ => RequestState::Complete,
        }
    }

    /// Idle -> in flight (the dispatcher, once).
    pub(crate) fn start(&self) {
        let r = self
            .state
            .compare_exchange(IDLE, IN_FLIGHT, Ordering::AcqRel, Ordering::Relaxed);
        assert!(r.is_ok(), "request {} started twice", self.id);
    }

    /// Takes a reference unless the count is zero (the request is being
    /// freed); for iterators over in-flight requests.
    pub(crate) fn get_unless_zero(&self) -> bool {
        // Relaxed: the reference publishes nothing; the caller re-checks
        // the tag slot before using the request.
        let mut n = self.refs.load(Ordering::Relaxed);
        while n != 0 {
            match self
                .refs
                .compare_exchange_weak(n, n + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => n = seen,
            }
        }
        false
    }

    /// Drops a reference; the last one frees the tag and leaves the queue.
    pub(crate) fn put(self: &Arc<Self>) {
        // AcqRel: the last put sees every other holder's accesses before
        // it frees the tag (as Arc's drop).
        if self.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.queue.free_request(self);
        }
    }

    /// Completes the request: in flight -> complete exactly once, then its
    /// end_io, then the submission's reference goes. A second completion,
    /// or one of a request not yet handed to the driver, is refused:
    /// counted in the queue's statistics and reported, never run. Returns
    /// whether this call completed it. Callable from any context,
    /// interrupt handlers included (see the `complete` module); `end_io`
    /// runs in the caller's context.
    pub fn complete(self: &Arc<Self>, result: Result<(), BlkError>) -> bool {
        if let Err(found) =
            self.state
                .compare_exchange(IN_FLIGHT, COMPLETE, Ordering::AcqRel, Ordering::Relaxed)
        {
            self.queue.note_refused_completion(self.id, found != IDLE);
            return false;
        }
        let end_io = self.end_io.lock().take();
        let data = core::mem::take(&mut *self.data.lock());
        if let Some(end_io) = end_io {
            end_io(BioDone {
                result,
                data,
                id: self.id,
            });
        }
        self.put();
        true
    }
}
