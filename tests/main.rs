//! End-to-end tests: they run the real `lifeboat` binary on real files.
//! One test binary (ripgrep's layout): modules by command, shared helpers in `util`.

mod alertmanager;
mod audit;
mod big_files;
mod children;
mod crash;
mod drills;
mod front_door;
mod ha;
mod hostile;
mod init;
mod injection;
mod people;
mod redaction;
mod retention;
mod run;
mod runbooks;
mod schedules;
mod serve;
mod shared;
mod ssrf;
mod ui;
mod util;
mod validate;
mod wakeups;
