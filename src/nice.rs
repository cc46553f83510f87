//! Operating system scheduling priority of cordon's own threads.
//!
//! Owns: setting and reading the `nice` value of the calling thread, and lowering that of this
//! process's threads by name (Linux keeps one per thread; elsewhere nothing is changed). Two
//! kinds of thread use it: the threads a vote waits for (the engine's, the store's writing
//! thread and the gRPC server's; sled's I/O threads, which the writing thread waits for, are
//! given that value by it) ask for a lower value than the rest of the process, so under an alert
//! storm a vote's decision, commit and answer are not queued behind HTTP request parsing for a
//! core; and whole-store readers (reports) ask for a higher one, so they yield.

/// `nice` of threads that read the whole store in the background (reports).
pub const BACKGROUND: i32 = 10;

/// Sets the calling thread's `nice` to `value`. Raising it is always permitted; lowering it
/// below the process's needs root, `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows it (systemd's
/// `LimitNICE=`), and is refused otherwise, leaving the priority as it was.
pub fn set_current_thread(value: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id; a failure changes nothing.
        let rc = unsafe {
            libc::setpriority(libc::PRIO_PROCESS as _, libc::gettid() as libc::id_t, value)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = value;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "per-thread priority is set on Linux only",
        ))
    }
}

/// The calling thread's `nice` (Linux), or `None`.
pub fn current_thread() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: reads the calling thread's own priority. `getpriority` may return -1 as a
        // value, so errno is cleared first and checked after.
        unsafe {
            *libc::__errno_location() = 0;
            let v = libc::getpriority(libc::PRIO_PROCESS as _, libc::gettid() as libc::id_t);
            (*libc::__errno_location() == 0).then_some(v)
        }
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Gives the calling thread, which every answer waits for (named `what`), the `nice` value
/// `value` (0: left as it is). Says once, at `info`, when the system refuses, and how to allow
/// it: the thread then runs at the process's priority, which only matters on a loaded host.
pub fn raise_critical(what: &str, value: i32) {
    raise_critical_once(what, value, &std::sync::atomic::AtomicBool::new(false));
}

/// [`raise_critical`] for each thread of a pool (a runtime's workers and blocking threads,
/// started as needed): the refusal is said once for the pool, the first time (`told`).
pub fn raise_critical_once(what: &str, value: i32, told: &std::sync::atomic::AtomicBool) {
    if value == 0 {
        return;
    }
    if let Err(e) = set_current_thread(value)
        && !told.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::info!(
            thread = what,
            nice = value,
            error = %e,
            "this thread runs at the process's priority: the system refused a lower nice value (allow it with root, CAP_SYS_NICE or systemd's LimitNICE={value}; or set store.critical_nice = 0 to stop asking)"
        );
    }
}

/// Gives every thread of this process whose name starts with `prefix` and whose `nice` is above
/// `value` the `nice` value `value` (threads a library starts for work an answer waits for:
/// sled's I/O pool, see `store::commit`). Never raises a thread's value. Returns how many were
/// changed; the first refusal ends the pass with its error (the same privileges as
/// [`set_current_thread`] below the process's value are needed).
pub fn lower_threads_named(prefix: &str, value: i32) -> std::io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let mut changed = 0;
        for task in std::fs::read_dir("/proc/self/task")? {
            let Ok(task) = task else { continue };
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<libc::id_t>().ok())
            else {
                continue;
            };
            // A thread may end between the listing and the reads: skipped.
            let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            if !comm.trim_end().starts_with(prefix) {
                continue;
            }
            // SAFETY: plain system calls on a thread id of this process; a failure changes
            // nothing. `getpriority` may return -1 as a value, so errno is cleared first.
            let now = unsafe {
                *libc::__errno_location() = 0;
                let v = libc::getpriority(libc::PRIO_PROCESS as _, tid);
                (*libc::__errno_location() == 0).then_some(v)
            };
            if now.is_none_or(|n| n <= value) {
                continue;
            }
            // SAFETY: as above.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS as _, tid, value) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ESRCH) {
                    continue;
                }
                return Err(e);
            }
            changed += 1;
        }
        Ok(changed)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (prefix, value);
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "per-thread priority is set on Linux only",
        ))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// Raising one's own `nice` is always allowed, and is read back; asking below it needs a
    /// privilege (granted to root here), and either way the thread's value is what was asked
    /// or what it was.
    #[test]
    fn a_thread_sets_and_reads_its_own_priority() {
        std::thread::spawn(|| {
            let before = super::current_thread().unwrap();
            super::set_current_thread(before + 3).unwrap();
            assert_eq!(super::current_thread(), Some(before + 3));
            match super::set_current_thread(before - 2) {
                Ok(()) => assert_eq!(super::current_thread(), Some(before - 2)),
                Err(_) => assert_eq!(super::current_thread(), Some(before + 3)),
            }
        })
        .join()
        .unwrap();
    }

    /// Threads are picked by name, only ever lowered: one above the asked value is given it
    /// (when the system allows lowering), one already below it and one of another name keep
    /// theirs.
    #[test]
    fn threads_are_lowered_by_name_and_never_raised() {
        use std::sync::mpsc;
        let ours = super::current_thread().unwrap();
        let (asked, above, below) = (ours + 4, ours + 9, ours + 2);
        let start = |name: &str, value: i32| {
            let (ready, is_ready) = mpsc::channel();
            let (stop, stopped) = mpsc::channel::<()>();
            let (told, tell) = mpsc::channel();
            let t = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    super::set_current_thread(value).unwrap();
                    ready.send(()).unwrap();
                    stopped.recv().unwrap();
                    told.send(super::current_thread().unwrap()).unwrap();
                })
                .unwrap();
            is_ready.recv().unwrap();
            (t, stop, tell)
        };
        let threads = [
            start("nice-t-above", above),
            start("nice-t-below", below),
            start("other-above", above),
        ];
        let result = super::lower_threads_named("nice-t-", asked);
        let after: Vec<i32> = threads
            .into_iter()
            .map(|(t, stop, tell)| {
                stop.send(()).unwrap();
                let v = tell.recv().unwrap();
                t.join().unwrap();
                v
            })
            .collect();
        match result {
            Ok(n) => {
                assert_eq!(n, 1);
                assert_eq!(after, [asked, below, above]);
            }
            Err(_) => assert_eq!(after, [above, below, above]),
        }
    }
}
