//! The `squall` binary: the command line with the built-in component kinds.

// Tuples are allocated by the task that emits them and freed by the task that executes them,
// on another thread: glibc's malloc is at its slowest there (the freeing thread takes the
// allocating thread's arena lock, which that thread then finds contended), and in the Kafka
// benchmark malloc and free were a third of the spout's time. mimalloc frees another thread's
// blocks without taking a lock: in alternation with the same code on glibc, Squall's
// consume-and-count went from 0.91–1.09 M to 1.31–1.35 M msg/s (docs/benchmarks.md, "Kafka:
// consume and count").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    squall::main(squall::operators::registry())
}

/// Turns transparent huge pages off for this process (and the workers it starts, which inherit
/// it). mimalloc asks for them on its arenas; a coordinator replica under a steady write load
/// frees and reuses memory in small pieces, and each fault of a fresh 2 MiB region zeroed all
/// of it: 4–6% of the replicas' CPU in `clear_page_erms` (`perf`, `squall bench coordinator
/// --mix set`), against 0.4% with 4 KiB pages, and a lower p99. Best effort: a kernel that does
/// not know the call changes nothing.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
