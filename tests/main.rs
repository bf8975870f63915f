//! End-to-end tests: they run the real `lifeboat` binary on real files.
//! One test binary (ripgrep's layout): modules by command, shared helpers in `util`.

mod alertmanager;
mod audit;
mod big_files;
mod channels;
mod children;
mod contrib;
mod crash;
mod doctor;
mod drill_freshness;
mod drill_runbooks;
mod drills;
mod front_door;
mod grafana;
mod ha;
mod hostile;
mod init;
mod injection;
mod lab;
mod notify_files;
mod people;
mod postgres_kind;
mod redaction;
mod retention;
mod run;
mod runbooks;
mod schedules;
mod serve;
mod shared;
mod shell;
mod ssrf;
mod telemetry;
mod ui;
mod util;
mod validate;
mod wakeups;
