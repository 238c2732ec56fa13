//! Work that nobody waits for: snapshots, freeing purged log chunks.

/// Lowers the calling thread's scheduling priority (nice 10 on Linux, as a batch job would be
/// run), so that the requests clients wait for go first and background work takes the CPU they
/// leave. Raising one's own nice value is always allowed; if it fails anyway, the thread keeps
/// its priority, which only costs the clients some speed.
pub(crate) fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; on Linux, `who` 0 is the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}
