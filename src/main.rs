//! The `squall` binary: the command line with the built-in component kinds.

fn main() -> std::process::ExitCode {
    squall::main(squall::operators::registry())
}
