//! Printing for the binaries built on the core (`runner`, `sim`): the core itself never
//! prints, it emits events.

/// `println!` that ends the program quietly when stdout is a closed pipe (`| head`)
/// instead of panicking, with the status of a process killed by SIGPIPE (128 + 13),
/// as a C tool would end. Rust ignores SIGPIPE, and restoring it would take `unsafe`,
/// which this workspace forbids.
#[macro_export]
macro_rules! say {
    () => {
        $crate::say!("")
    };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(141);
            }
            panic!("failed printing to stdout: {e}");
        }
    }};
}
