//! Keeping a long-running daemon's resident memory close to what it uses.
//!
//! glibc's allocator keeps freed memory in its arenas: after a burst of
//! polls, MiBs stay resident while the daemon idles. The daemon hands free
//! memory back to the system when polling goes quiet, and after a config
//! load (which parses a large file on a thread of its own, so that the
//! parse's leftovers do not pin the main heap's pages). (Capping the arenas
//! saved a little more but cost the scan about 5 % of its CPU in lock
//! contention, so it is not done.) Other C libraries: nothing to do.

/// Returns free heap memory to the system (cheap on an idle heap).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's
    // own heaps; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
