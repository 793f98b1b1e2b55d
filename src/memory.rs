//! Keeping a long-running daemon's resident memory close to what it uses.
//!
//! glibc's allocator gives each thread that allocates its own arena (up to
//! eight per core) and keeps freed memory in them: after a burst of polls
//! across the blocking pool, tens of MiB stay resident while the daemon
//! idles. The daemon caps the arenas at start and hands free memory back to
//! the system when polling goes quiet. Other C libraries: nothing to do.

/// Caps the allocator's arenas (call once, before the runtime's threads
/// start allocating).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; M_ARENA_MAX = 2 is a
    // documented value. Called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap memory to the system (cheap on an idle heap).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's
    // own heaps; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
