//! What both benchmarks (`make bench`, `make bench-forwarder`) share: the
//! measured server runs pinned to core 0 and the benchmark itself to core 1
//! ([`pinned`], [`run_on_core`]), and a process is measured from `/proc`
//! ([`cpu_time`], [`memory_mib`]). Linux only, as the benchmarks are; on a
//! machine with one core nothing is pinned.
//!
//! Pinning is `taskset` rather than `sched_setaffinity` through a crate: the
//! measured servers are other binaries started as child processes, and
//! `taskset` pins them before their first instruction.

use std::process::Command;
use std::time::Duration;

/// Set in the environment of the benchmark once it runs on its core.
const PINNED_ENV: &str = "CYCLOPS_BENCH_PINNED";

/// Whether the machine has the two cores pinning needs. Once this
/// benchmark runs pinned ([`run_on_core`]), the cores it may use are one,
/// whatever the machine has: that it was pinned is the answer then.
pub fn can_pin() -> bool {
    std::env::var_os(PINNED_ENV).is_some() || std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
}

/// `program`, to be run on `core` when the machine has two or more cores.
pub fn pinned(program: &str, core: u32) -> Command {
    if !can_pin() {
        return Command::new(program);
    }
    let mut command = Command::new("taskset");
    command.args(["-c", &core.to_string(), program]);
    command
}

/// Runs this benchmark again on `core` with the same arguments and exits
/// with its status; returns (and does nothing) when it already runs there,
/// or when there are not two cores to pin to.
pub fn run_on_core(core: u32) {
    if std::env::var_os(PINNED_ENV).is_some() || !can_pin() {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("cannot find this benchmark's executable to pin it: {e}"),
    };
    let status = Command::new("taskset")
        .args(["-c", &core.to_string()])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(PINNED_ENV, "1")
        .status()
        .unwrap_or_else(|e| panic!("cannot run taskset: {e}"));
    std::process::exit(status.code().unwrap_or(1));
}

/// CPU time (user + system) process `pid` has used so far; zero when it
/// cannot be read.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after `(comm)`, which may hold spaces: utime and stime are
    // the 12th and 13th of them.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
    // /proc counts in USER_HZ ticks, 100 a second on every mainstream Linux build.
    Duration::from_millis(ticks * 10)
}

/// A memory figure of process `pid` from `/proc/PID/status`, in MiB: `key`
/// is `"VmHWM:"` (peak resident) or `"VmRSS:"` (resident now); 0 when it
/// cannot be read.
pub fn memory_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_uses_time() {
        let pid = std::process::id();
        assert!(memory_mib(pid, "VmHWM:") > 0.0);
        assert!(memory_mib(pid, "VmRSS:") > 0.0);
        assert_eq!(memory_mib(pid, "NoSuchKey:"), 0.0);
        for _ in 0..10_000 {
            if !cpu_time(pid).is_zero() {
                break;
            }
            std::hint::black_box((0..100_000u64).sum::<u64>());
        }
        assert!(!cpu_time(pid).is_zero(), "a process that spun has used CPU time");
    }
}
