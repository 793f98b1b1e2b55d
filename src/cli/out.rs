//! Writing a command's output. A reader that goes away (`synthd status |
//! head`) closes the pipe: the command then stops quietly, with exit code
//! 0, instead of panicking inside `println!`.

use std::io::Write;

/// Writes `text` to stdout; on a closed pipe, exits quietly.
pub fn write(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let result = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Nothing sensible is left to do with output that cannot be
        // written (a full disk behind a redirect): say so once and stop.
        let _ = writeln!(std::io::stderr(), "synthd: cannot write output: {e}");
        std::process::exit(1);
    }
}

/// Writes a line to stderr, ignoring a closed stderr.
pub fn error(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// `println!` that survives a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::out::write("\n") };
    ($($arg:tt)*) => { $crate::cli::out::write(&format!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that survives a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(&format!($($arg)*)) };
}
