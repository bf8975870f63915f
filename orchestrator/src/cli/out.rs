//! The CLI's standard output. Every command prints through `outln!`/`out!`
//! (never `println!`, which panics when the reader has gone): a reader that
//! stopped early (`lifeboat logs RUN | head`) ends the command quietly with
//! exit 0, as it would a Unix tool; any other write error is an error (exit 2).

use std::fmt;
use std::io::{self, Write};

/// Writes `args` and a newline to standard output.
pub fn line(args: fmt::Arguments) {
    write(|out| {
        out.write_fmt(args)?;
        out.write_all(b"\n")
    });
}

/// Writes `args` to standard output, without a newline.
pub fn text(args: fmt::Arguments) {
    write(|out| out.write_fmt(args));
}

fn write(print: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>) {
    let mut out = io::stdout().lock();
    if let Err(e) = print(&mut out) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            // The work is done; what is left is output nobody reads.
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(2);
    }
}
