//! The software device's synchronisation objects, in the process: what DRM syncobjs are
//! to the kernel device. The copy engine runs a submission to completion inside
//! [`CopyEngine::submit`](extmem::backend::CopyEngine::submit), so a payload is
//! signalled the moment its submission returns, and a wait whose signal is not submitted
//! yet can only be satisfied by another thread ([`Syncobjs::signal`] or a later submit);
//! [`SyncTable::wait`] sleeps on a condition variable for that.
//!
//! Nothing here can leave the process: [`Syncobjs::shareable`] is `false` and the fd
//! exports and imports keep their `EOPNOTSUPP` defaults, so the front end reports the
//! external semaphore and fence handle types as unsupported rather than faking fds.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use extmem::backend::{errno, BackendError, Op};
use extmem::sync::{SyncHandle, SyncPoint, Syncobjs, WaitOutcome};

/// One object's payloads.
#[derive(Clone, Copy, Default, Debug)]
struct Payload {
    /// The binary payload is signalled.
    binary: bool,
    /// The timeline's last signalled value.
    value: u64,
}

impl Payload {
    fn reached(self, value: u64) -> bool {
        if value == 0 {
            self.binary
        } else {
            self.value >= value
        }
    }
}

#[derive(Default, Debug)]
struct Objects {
    live: BTreeMap<NonZeroU32, Payload>,
    last: u32,
}

/// The objects of one software device.
#[derive(Default, Debug)]
pub struct SyncTable {
    objects: Mutex<Objects>,
    changed: Condvar,
    /// Submissions whose commands faulted (what `GET_PARAM(JOB_FAULTS)` counts for a
    /// kernel file).
    faults: AtomicU64,
}

fn no_such(op: Op) -> BackendError {
    BackendError {
        op,
        errno: errno::ENOENT,
    }
}

impl SyncTable {
    fn lock(&self) -> MutexGuard<'_, Objects> {
        // A panic elsewhere cannot leave a payload half-written: every update is one store.
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether every point of `points` is signalled now; an unknown handle is `ENOENT`.
    /// Used by a submission, which cannot wait: a wait that is not signalled yet is
    /// `EINVAL`, what the kernel answers for a syncobj without a fence.
    pub fn check_signaled(&self, points: &[SyncPoint]) -> Result<(), BackendError> {
        let objects = self.lock();
        for p in points {
            let payload = objects.live.get(&p.handle.0).ok_or(no_such(Op::Exec))?;
            if !payload.reached(p.value) {
                return Err(BackendError {
                    op: Op::Exec,
                    errno: errno::EINVAL,
                });
            }
        }
        Ok(())
    }

    /// Whether every handle of `points` names a live object (`ENOENT` if not): checked
    /// before a submission runs, as the kernel checks its syncobjs before queueing.
    pub fn check_known(&self, points: &[SyncPoint]) -> Result<(), BackendError> {
        let objects = self.lock();
        if points
            .iter()
            .any(|p| !objects.live.contains_key(&p.handle.0))
        {
            return Err(no_such(Op::Exec));
        }
        Ok(())
    }

    /// Counts a submission whose commands faulted; called before it signals, so a
    /// waiter that wakes sees it counted.
    pub fn count_fault(&self) {
        self.faults.fetch_add(1, Ordering::SeqCst);
    }

    /// Submissions whose commands faulted so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }

    /// Signals each of `points` (a submission that has run); unknown handles are
    /// `ENOENT`, checked before anything is signalled.
    pub fn signal_all(&self, points: &[SyncPoint]) -> Result<(), BackendError> {
        let mut objects = self.lock();
        if points
            .iter()
            .any(|p| !objects.live.contains_key(&p.handle.0))
        {
            return Err(no_such(Op::Exec));
        }
        for p in points {
            if let Some(payload) = objects.live.get_mut(&p.handle.0) {
                if p.value == 0 {
                    payload.binary = true;
                } else {
                    payload.value = payload.value.max(p.value);
                }
            }
        }
        drop(objects);
        self.changed.notify_all();
        Ok(())
    }
}

impl Syncobjs for SyncTable {
    fn create(&self, signaled: bool) -> Result<SyncHandle, BackendError> {
        let mut objects = self.lock();
        let next = objects.last.checked_add(1).ok_or(BackendError {
            op: Op::Sync,
            errno: errno::ENOSPC,
        })?;
        let handle = NonZeroU32::new(next).ok_or(BackendError {
            op: Op::Sync,
            errno: errno::ENOSPC,
        })?;
        objects.last = next;
        objects.live.insert(
            handle,
            Payload {
                binary: signaled,
                value: 0,
            },
        );
        Ok(SyncHandle(handle))
    }

    fn destroy(&self, handle: SyncHandle) {
        self.lock().live.remove(&handle.0);
        // A waiter on it must see ENOENT rather than sleep on.
        self.changed.notify_all();
    }

    fn wait(
        &self,
        points: &[SyncPoint],
        all: bool,
        timeout_ns: u64,
    ) -> Result<WaitOutcome, BackendError> {
        let deadline = Instant::now().checked_add(Duration::from_nanos(timeout_ns));
        let mut objects = self.lock();
        loop {
            let mut reached = Vec::with_capacity(points.len());
            for p in points {
                let payload = objects.live.get(&p.handle.0).ok_or(no_such(Op::Sync))?;
                reached.push(payload.reached(p.value));
            }
            let done = if all {
                reached.iter().all(|r| *r)
            } else {
                points.is_empty() || reached.iter().any(|r| *r)
            };
            if done {
                return Ok(WaitOutcome::Signaled);
            }
            // No deadline: the timeout is beyond what an Instant holds, i.e. forever.
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(WaitOutcome::TimedOut),
                },
                None => None,
            };
            objects = match left {
                Some(left) => {
                    self.changed
                        .wait_timeout(objects, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .changed
                    .wait(objects)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// A submission runs at once, so a point has a fence exactly when it is signalled:
    /// available is signalled.
    fn wait_available(
        &self,
        points: &[SyncPoint],
        timeout_ns: u64,
    ) -> Result<WaitOutcome, BackendError> {
        self.wait(points, true, timeout_ns)
    }

    fn job_faults(&self) -> Result<u64, BackendError> {
        Ok(self.faults())
    }

    fn reset(&self, handle: SyncHandle) -> Result<(), BackendError> {
        let mut objects = self.lock();
        let payload = objects.live.get_mut(&handle.0).ok_or(no_such(Op::Sync))?;
        payload.binary = false;
        Ok(())
    }

    fn signal(&self, point: SyncPoint) -> Result<(), BackendError> {
        self.signal_all(&[point]).map_err(|e| BackendError {
            op: Op::Sync,
            errno: e.errno,
        })
    }

    fn query(&self, handle: SyncHandle) -> Result<u64, BackendError> {
        let objects = self.lock();
        Ok(objects.live.get(&handle.0).ok_or(no_such(Op::Sync))?.value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;

    fn point(handle: SyncHandle, value: u64) -> SyncPoint {
        SyncPoint { handle, value }
    }

    #[test]
    fn binary_and_timeline_payloads_follow_signals_and_resets() -> Result<(), BackendError> {
        let table = SyncTable::default();
        let a = table.create(false)?;
        let b = table.create(true)?;
        assert_eq!(table.wait(&[point(a, 0)], true, 0)?, WaitOutcome::TimedOut);
        assert_eq!(table.wait(&[point(b, 0)], true, 0)?, WaitOutcome::Signaled);
        assert_eq!(
            table.wait(&[point(a, 0), point(b, 0)], false, 0)?,
            WaitOutcome::Signaled
        );
        table.reset(b)?;
        assert_eq!(table.wait(&[point(b, 0)], true, 0)?, WaitOutcome::TimedOut);
        table.signal(point(a, 5))?;
        assert_eq!(table.query(a)?, 5);
        // A lower value never moves a timeline back.
        table.signal(point(a, 3))?;
        assert_eq!(table.query(a)?, 5);
        assert_eq!(table.wait(&[point(a, 5)], true, 0)?, WaitOutcome::Signaled);
        assert_eq!(table.wait(&[point(a, 6)], true, 0)?, WaitOutcome::TimedOut);
        assert_eq!(
            table.check_signaled(&[point(a, 6)]).map_err(|e| e.errno),
            Err(errno::EINVAL)
        );
        table.destroy(a);
        assert_eq!(
            table.query(a).map_err(|e| e.errno),
            Err(errno::ENOENT),
            "a destroyed object is gone"
        );
        Ok(())
    }

    #[test]
    fn a_wait_wakes_when_another_thread_signals() -> Result<(), BackendError> {
        let table = Arc::new(SyncTable::default());
        let t = table.create(false)?;
        let signaller = {
            let table = Arc::clone(&table);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                table.signal(point(t, 2))
            })
        };
        let started = Instant::now();
        assert_eq!(
            table.wait(&[point(t, 2)], true, u64::MAX)?,
            WaitOutcome::Signaled
        );
        assert!(started.elapsed() >= Duration::from_millis(20));
        signaller
            .join()
            .unwrap_or_else(|_| panic!("the signalling thread panicked"))?;
        Ok(())
    }
}
