//! One stack per worker thread for answering requests, kept hot in the CPU's caches.
//!
//! Every connection runs in a coroutine with a stack of its own. Answering what a
//! connection has buffered (parsing, routing, JSON, signing, serializing the response) is
//! the deepest part of a request, and with ten thousand connections answered in turn, its
//! frames would land each time on a different coroutine's stack, gone from the caches
//! since that connection's last request. Yet answering never yields: it waits for no
//! database (views only `try_send`) and writes to no socket (the connection loop flushes
//! afterwards). So while it runs, no other coroutine can run on the thread, and [`run`]
//! switches to one stack per worker thread for it, and back: the deep frames land on the
//! same few kilobytes every time, and a coroutine's own stack holds little more than the
//! connection loop and its wait for the socket.
//!
//! Each hot stack is as large as a coroutine's (`--stack-bytes`), with a guard page below
//! it. If one cannot be mapped, the work runs in place, on the coroutine's stack, which is
//! sized to hold it. A panic is caught on the hot stack and resumed on the coroutine's, so
//! it unwinds as if the work had run there.
//!
//! With the runtime's stack tracking on (an odd number of words as `--stack-bytes`, see
//! `tests/stack_depth.rs`), each use prints how much of the hot stack it touched, in the
//! runtime's own format: `hot stack: stack size = W, used size = U` (words).

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Usable bytes of each hot stack, set once by [`configure`] before the workers start.
static STACK_BYTES: AtomicUsize = AtomicUsize::new(64 * 1024);
/// What the tracking fills an untouched hot stack with.
const UNTOUCHED: usize = 0xEEEE_EEEE_EEEE_EEEEu64 as usize;
const WORD: usize = std::mem::size_of::<usize>();

/// Sets the size of the hot stacks mapped from now on: `stack_bytes`, rounded up to whole
/// pages (an odd number of words turns the tracking on); 0 when `enabled` is false, and
/// threads then map none.
pub(super) fn configure(stack_bytes: usize, enabled: bool) {
    STACK_BYTES.store(if enabled { stack_bytes } else { 0 }, Ordering::Relaxed);
}

struct HotStack {
    /// Lowest usable byte, just above the guard page; `None` when mapping failed.
    base: Option<NonNull<u8>>,
    /// Usable bytes from `base`, a whole number of pages.
    len: usize,
    /// Whether each use reports its depth (the runtime's tracking convention).
    tracked: bool,
    busy: Cell<bool>,
}

impl HotStack {
    fn map() -> HotStack {
        let requested = STACK_BYTES.load(Ordering::Relaxed);
        let page = page_size();
        let len = requested.div_ceil(page) * page;
        let base = map_guarded(len, page);
        let stack = HotStack {
            base,
            len,
            tracked: base.is_some() && (requested / WORD) % 2 == 1,
            busy: Cell::new(false),
        };
        if stack.tracked {
            stack.fill_untouched(len);
        }
        stack
    }

    /// Marks the `top` bytes at the high end (where the stack grows down from) untouched.
    fn fill_untouched(&self, top: usize) {
        let Some(base) = self.base else { return };
        let words = self.len / WORD;
        // SAFETY: the `len` mapped, writable bytes from the page-aligned `base`; no work
        // runs on the stack now, so nothing else refers to them.
        let stack = unsafe { std::slice::from_raw_parts_mut(base.as_ptr().cast(), words) };
        stack[words - top.min(self.len) / WORD..].fill(UNTOUCHED);
    }

    /// Prints how deep the last use went, and marks what it touched untouched again.
    fn report_use(&self) {
        let Some(base) = self.base else { return };
        let words = self.len / WORD;
        // SAFETY: the `len` mapped bytes from the page-aligned `base`, read while no work
        // runs on the stack.
        let stack = unsafe { std::slice::from_raw_parts(base.as_ptr().cast::<usize>(), words) };
        let untouched = stack.iter().take_while(|&&word| word == UNTOUCHED).count();
        let used = words - untouched;
        println!("hot stack: stack size = {words}, used size = {used}");
        self.fill_untouched(used * WORD);
    }
}

impl Drop for HotStack {
    fn drop(&mut self) {
        if let Some(base) = self.base {
            let page = page_size();
            let mapping = base.as_ptr().wrapping_sub(page);
            // SAFETY: the mapping made in `map`, which starts one page below `base`. A
            // thread's locals drop when it ends, when no work runs on the stack.
            unsafe { libc::munmap(mapping.cast(), self.len + page) };
        }
    }
}

/// Maps `len` bytes (a whole number of pages, 0 for none) above a guard page of `page`
/// bytes; the lowest usable byte, or `None` when not mapped.
fn map_guarded(len: usize, page: usize) -> Option<NonNull<u8>> {
    if len == 0 {
        return None;
    }
    let total = len + page;
    // SAFETY: an anonymous private mapping at an address the kernel picks; the result is
    // checked before use.
    let mapped = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the first page of the mapping just made.
    if unsafe { libc::mprotect(mapped, page, libc::PROT_NONE) } != 0 {
        // SAFETY: exactly the mapping just made, never used.
        unsafe { libc::munmap(mapped, total) };
        return None;
    }
    // SAFETY: `page` bytes into a mapping of `total` bytes.
    NonNull::new(unsafe { mapped.cast::<u8>().add(page) })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

thread_local! {
    static HOT_STACK: HotStack = HotStack::map();
}

/// Runs `work` on this thread's hot stack (in place if the thread has none or is already
/// on it). `work` must not yield to the coroutine scheduler: no socket I/O, no `may`
/// channel or lock.
///
/// Never inlined: a coroutine may resume on another thread after a yield, so the
/// thread-local's address must be computed here, where it is used, not hoisted into the
/// caller's loop.
#[inline(never)]
pub(super) fn run<R>(work: impl FnOnce() -> R) -> R {
    HOT_STACK.with(|stack| match stack.base {
        Some(base) if !stack.busy.get() => {
            stack.busy.set(true);
            // SAFETY: `base..base + len` is mapped, writable, page-aligned and used by
            // nothing else: `busy` keeps it to one use at a time, and `work` does not
            // yield, so no other coroutine runs on this thread until it returns. The
            // panic is caught before it could unwind across the switch of stacks.
            let result = unsafe {
                psm::on_stack(base.as_ptr(), stack.len, || {
                    panic::catch_unwind(AssertUnwindSafe(work))
                })
            };
            if stack.tracked {
                stack.report_use();
            }
            stack.busy.set(false);
            result.unwrap_or_else(|payload| panic::resume_unwind(payload))
        }
        _ => work(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_of_recursion(levels: u32) -> u32 {
        let frame = std::hint::black_box([levels as u8; 512]);
        if levels == 0 {
            return u32::from(frame[0]);
        }
        depth_of_recursion(levels - 1) + 1
    }

    #[test]
    fn work_runs_on_the_hot_stack_and_returns_its_value() {
        let outside = 0u8;
        let outside_address = std::ptr::addr_of!(outside) as usize;
        let (inside_address, value) = run(|| {
            let inside = 0u8;
            (std::ptr::addr_of!(inside) as usize, depth_of_recursion(40))
        });
        assert_eq!(value, 40);
        let (low, len) =
            HOT_STACK.with(|stack| (stack.base.map(|b| b.as_ptr() as usize), stack.len));
        let low = low.expect("the hot stack is mapped");
        assert!(
            (low..low + len).contains(&inside_address),
            "work ran on the hot stack"
        );
        assert!(!(low..low + len).contains(&outside_address));
    }

    #[test]
    fn a_panic_unwinds_to_the_caller_and_the_stack_stays_usable() {
        let caught = panic::catch_unwind(|| run(|| panic!("inside")));
        let message = caught.expect_err("the panic reaches the caller");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"inside"));
        assert_eq!(run(|| depth_of_recursion(10)), 10);
        assert!(!HOT_STACK.with(|stack| stack.busy.get()));
    }

    #[test]
    fn nested_use_runs_in_place() {
        let inner = run(|| run(|| depth_of_recursion(3)));
        assert_eq!(inner, 3);
    }
}
