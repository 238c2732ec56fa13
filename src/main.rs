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
    squall::main(squall::operators::registry())
}
