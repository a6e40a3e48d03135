//! Response buffers lent to a connection only while it answers, from a pool per thread.
//!
//! A connection needs a [`Response`] (headers and body under construction) and an output
//! buffer only from the moment a complete request is parsed until the answers are written.
//! Between requests, which for a keep-alive connection is most of its life, it holds
//! neither: it takes a set from the pool of the worker thread it runs on
//! ([`ResponseBuffers::take`]) and gives it back once the output is written
//! ([`ResponseBuffers::give_back`]). So with ten thousand connections open, the buffers a
//! request writes into are the few a worker keeps recycling, still in the CPU's caches,
//! not one set per connection gone cold since that connection's last request; and an
//! idle connection costs no response memory.
//!
//! A connection whose write blocks keeps its set while it waits (and may resume on
//! another thread, whose pool then gets the set back). Sets that grew large (a response
//! with many sources, a flood of pipelined answers) are freed rather than kept.

use std::cell::RefCell;

use super::response::Response;

/// Sets a thread keeps for reuse; more are freed when given back. Only connections whose
/// writes are blocked hold a set between wake-ups, so a worker rarely needs more.
const POOLED_PER_THREAD: usize = 64;
/// A set whose buffers grew past this (capacity, each) is freed when given back.
const LARGEST_POOLED: usize = 64 * 1024;

/// One connection's response under construction and the bytes waiting to be written.
#[derive(Debug, Default)]
pub(super) struct ResponseBuffers {
    pub response: Response,
    pub output: Vec<u8>,
}

thread_local! {
    // Boxed so that lending a set moves a pointer, and a connection holds one word for it.
    #[allow(clippy::vec_box)]
    static POOL: RefCell<Vec<Box<ResponseBuffers>>> = const { RefCell::new(Vec::new()) };
}

impl ResponseBuffers {
    /// A set from this thread's pool, or a new one.
    ///
    /// Never inlined, like [`ResponseBuffers::give_back`]: a coroutine may resume on
    /// another thread after a yield, and inlined into the connection loop, the pool's
    /// thread-local address could be computed before a yield and used after it, on the
    /// wrong thread. Behind a call, it is computed where it is used.
    #[inline(never)]
    pub fn take() -> Box<ResponseBuffers> {
        POOL.with_borrow_mut(Vec::pop).unwrap_or_default()
    }

    /// Returns a set whose output has been written to this thread's pool, emptied; a
    /// large one is freed instead.
    #[inline(never)]
    pub fn give_back(mut self: Box<Self>) {
        if self.output.capacity() > LARGEST_POOLED || self.response.capacity() > LARGEST_POOLED {
            return;
        }
        self.output.clear();
        self.response.clear();
        POOL.with_borrow_mut(|pool| {
            if pool.len() < POOLED_PER_THREAD {
                pool.push(self);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_given_back_is_taken_again_empty() {
        let mut buffers = ResponseBuffers::take();
        buffers.output.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        buffers.response.body.extend_from_slice(b"hello");
        let address = &*buffers as *const ResponseBuffers;
        buffers.give_back();
        let again = ResponseBuffers::take();
        assert_eq!(&*again as *const ResponseBuffers, address, "the same set");
        assert!(again.output.is_empty());
        assert!(again.response.body.is_empty());
        again.give_back();
    }

    #[test]
    fn a_set_that_grew_large_is_freed_not_pooled() {
        // On a thread of its own, whose pool starts empty.
        std::thread::spawn(|| {
            let pooled = || POOL.with_borrow(Vec::len);
            let mut buffers = ResponseBuffers::take();
            buffers.output.reserve(LARGEST_POOLED + 1);
            buffers.give_back();
            assert_eq!(pooled(), 0, "a large output is not pooled");
            let mut buffers = ResponseBuffers::take();
            buffers.response.body.reserve(LARGEST_POOLED + 1);
            buffers.give_back();
            assert_eq!(pooled(), 0, "nor a large body");
            ResponseBuffers::take().give_back();
            assert_eq!(pooled(), 1, "a small set is");
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_sets() {
        std::thread::spawn(|| {
            let sets: Vec<_> = (0..POOLED_PER_THREAD + 10)
                .map(|_| ResponseBuffers::take())
                .collect();
            for set in sets {
                set.give_back();
            }
            assert_eq!(POOL.with_borrow(Vec::len), POOLED_PER_THREAD);
        })
        .join()
        .expect("thread");
    }
}
