//! Background work yields the CPU to the cameras.
//!
//! On a box of a few cores, the face models run for an upload (an
//! enrolment, a search by photo, a watch-list photo) or a rebuild of the
//! gallery's index after a change made elsewhere take whole cores for
//! seconds. A gate camera's match then waits for a core, not for a lock:
//! its p99 grew 3–4× during such work (BENCHMARKS.md §9.2). So that work
//! runs under [`background`]: the calling thread's scheduling priority is
//! lowered to nice [`NICE`] for the guard's life and put back when it is
//! dropped. Gate cameras keep the process's priority and patrol cameras run
//! `ingest.patrol_nice` (15) steps nicer; Linux gives a nice-0 thread about
//! 68 times the CPU of a nice-19 one, and a nice-15 one 2.4 times, when both
//! want it. When the cameras are idle, the background work gets the whole
//! box.
//!
//! Putting the priority back needs the right to raise it
//! (`RLIMIT_NICE` ≥ 20 − the old nice, which the packaged unit sets with
//! `LimitNICE=+0`, or root). Without it the guard changes nothing, so a
//! pool thread is never left slow for later work; the gateway says so once
//! at start ([`check`]). Linux only (per-thread nice); elsewhere a no-op.

/// The nice value of background work: the lowest (0 is normal), below the
/// patrol cameras' (`ingest.patrol_nice`, at most 19).
pub const NICE: i32 = 19;

/// Lowers this thread's priority until the guard is dropped (nested guards
/// are fine). Hold it around model runs and index builds, not while
/// holding a lock the cameras need: a low-priority thread holding the
/// gallery lock would make the cameras wait for it.
#[must_use = "the priority is restored when the guard is dropped"]
pub fn background() -> Background {
    Background {
        restore: imp::lower(NICE),
    }
}

/// Makes this thread `inc` steps nicer for the rest of its life (lowering a
/// priority needs no privilege). For threads that do one kind of work only:
/// a patrol camera's recognition thread yields to the gate cameras'.
pub fn lower_for_life(inc: i32) -> Result<(), String> {
    if inc == 0 {
        return Ok(());
    }
    let now = imp::get().ok_or("cannot read this thread's priority")?;
    if imp::set((now + inc).min(19)) {
        Ok(())
    } else {
        Err(format!(
            "cannot lower this thread's priority by {inc}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Sets this thread's nice value (lowering always works; raising needs
/// the right, see [`background`]). Whether it took.
pub fn set_this_thread(nice: i32) -> bool {
    imp::get() == Some(nice) || imp::set(nice.clamp(-20, 19))
}

/// Whether [`background`] can work in this process: `Err` says why not.
pub fn check() -> Result<(), String> {
    imp::check()
}

/// See [`background`].
#[derive(Debug)]
pub struct Background {
    restore: Option<i32>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(old) = self.restore {
            imp::set(old);
        }
    }
}

/// This thread's nice value, where it can be read.
pub fn current_nice() -> Option<i32> {
    imp::get()
}

#[cfg(target_os = "linux")]
mod imp {
    fn tid() -> libc::id_t {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as libc::id_t }
    }

    pub fn get() -> Option<i32> {
        // getpriority may return -1 legitimately: errno tells.
        // SAFETY: plain syscalls on this thread's id.
        unsafe {
            *libc::__errno_location() = 0;
            let v = libc::getpriority(libc::PRIO_PROCESS, tid());
            (v != -1 || *libc::__errno_location() == 0).then_some(v)
        }
    }

    pub fn set(nice: i32) -> bool {
        // SAFETY: changes only this thread's priority.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid(), nice) == 0 }
    }

    /// The lowest nice value this thread may go back to: the soft
    /// `RLIMIT_NICE` allows 20 − limit; root may go anywhere.
    fn floor() -> i32 {
        // SAFETY: geteuid and getrlimit only read.
        unsafe {
            if libc::geteuid() == 0 {
                return -20;
            }
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NICE, &mut r) != 0 {
                return 20;
            }
            20 - (r.rlim_cur.min(40) as i32)
        }
    }

    pub fn lower(nice: i32) -> Option<i32> {
        let old = get()?;
        if old >= nice || floor() > old {
            return None;
        }
        set(nice).then_some(old)
    }

    pub fn check() -> Result<(), String> {
        let old = get().ok_or("cannot read this thread's priority")?;
        if floor() > old {
            return Err(format!(
                "background work (enrolment models, index rebuilds) runs at normal priority: raising a thread's priority back to nice {old} needs RLIMIT_NICE >= {} (systemd: LimitNICE=+0)",
                20 - old
            ));
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn get() -> Option<i32> {
        None
    }
    pub fn set(_: i32) -> bool {
        false
    }
    pub fn lower(_: i32) -> Option<i32> {
        None
    }
    pub fn check() -> Result<(), String> {
        Err("background work runs at normal priority (per-thread nice is Linux only)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_lowers_this_thread_only_and_puts_it_back() {
        std::thread::spawn(|| {
            let before = current_nice().unwrap();
            let can = check().is_ok();
            // A thread started before the guard (threads inherit their
            // creator's nice value) answers when asked.
            let (ask, asked) = std::sync::mpsc::channel::<()>();
            let other = std::thread::spawn(move || {
                asked.recv().unwrap();
                current_nice().unwrap()
            });
            {
                let _bg = background();
                let inside = current_nice().unwrap();
                if can {
                    assert_eq!(inside, NICE);
                    // Another thread is not affected.
                    ask.send(()).unwrap();
                    assert_eq!(other.join().unwrap(), before);
                    // Nested: still background, and back to it after.
                    {
                        let _inner = background();
                        assert_eq!(current_nice().unwrap(), NICE);
                    }
                    assert_eq!(current_nice().unwrap(), NICE);
                } else {
                    // Could not be put back: not lowered at all.
                    assert_eq!(inside, before);
                    drop(ask);
                    let _ = other.join();
                }
            }
            assert_eq!(current_nice().unwrap(), before);
        })
        .join()
        .unwrap();
    }
}
