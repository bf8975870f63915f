//! `lifeboat-exec`, installed beside `lifeboat`: the launcher a `shell`
//! step's program starts through, so that `serve` can start it with
//! `posix_spawn` and it still dies with its worker. All of it is in
//! `lifeboat_steps::shim` (`steps/src/process/shim.rs`), next to the code
//! that starts it; this binary links nothing else.

fn main() {
    lifeboat_steps::shim::main()
}
