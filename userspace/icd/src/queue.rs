//! The device's queue: submissions in order, held back while what they wait for has no
//! signal submitted yet, and the timeline `vkQueueWaitIdle` and `vkDeviceWaitIdle` wait on.
//!
//! A submission is queued, not run: `vkQueueSubmit` hands each batch's commands to the
//! copy engine with the batch's wait semaphores to wait for and its signal semaphores
//! (and, after the last batch, the fence) to signal, and returns. Every job also signals
//! the next point of the queue's own timeline.
//!
//! Memory, buffers and command buffers may be freed while a job that uses them is still
//! queued: the kernel holds its own references to the job's objects and pages and keeps
//! its page-table entries until the job's fence signals (the EXEC contract in
//! `extmem-uapi`), and the commands themselves were copied into the job. The software
//! device runs each job before `submit` returns.
//!
//! **Wait-before-signal.** Vulkan lets a batch wait for a timeline value whose signal is
//! submitted later, by another queue or process or by `vkSignalSemaphore`. The kernel
//! refuses a wait on a point it holds no fence for (`EINVAL`, as `drm_syncobj_find_fence`
//! answers every DRM driver), so, as Mesa's runtime does for kernels without such waits
//! (its submit thread, started on demand), a job whose wait points are not all
//! *available* (a syncobj wait with `WAIT_AVAILABLE` and no timeout says so) is held back,
//! and with it every later job of the queue, to keep their order. A thread of the queue,
//! started the first time a job is held, waits for the first held job's points to become
//! available (`WAIT_FOR_SUBMIT | WAIT_AVAILABLE`, in slices so that it notices the
//! device's destruction), hands the job to the kernel and goes on with the next. While
//! nothing is held, jobs go to the kernel from the calling thread.
//!
//! The queue timeline's points are numbered, and the fence and signal semaphores named,
//! when the application submits, and every host wait waits for a signal that is not
//! submitted yet (`WAIT_FOR_SUBMIT`): fence waits, `vkWaitSemaphores`, `vkQueueWaitIdle`
//! and `vkDeviceWaitIdle` therefore cover held jobs without knowing of them. A job the
//! kernel refuses (from either thread) loses the device: it and every job behind it are
//! abandoned, their signals signalled from the host so that no waiter hangs, and the
//! waiter then finds the device lost. `vkDestroyDevice` stops the thread; jobs still held
//! then are dropped (the application must have waited for its work before destroying).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use ash::vk::{self, Handle};
use extmem::backend::Backend;
use extmem::exec::{Command, MAX_COMMANDS};
use extmem::sync::{SyncHandle, SyncPoint, Syncobjs, WaitOutcome, MAX_WAIT_POINTS};
use extmem::Error;

use crate::error::{IcdError, IcdResult, Rule};
use crate::handles::lock;
use crate::objects::{self, Device, COMMAND_BUFFERS, DEVICES, QUEUES};
use crate::sync::{sync_error, Semaphore, FENCES, SEMAPHORES};

/// How long the submit thread waits for a held job's points before it looks again
/// whether the device is being destroyed.
const HOLD_SLICE_NS: u64 = 100_000_000;

/// One `EXEC`'s worth of a batch: commands (at most [`MAX_COMMANDS`]) with what they wait
/// for and signal.
#[derive(Debug)]
struct Job {
    cmds: Vec<Command>,
    waits: Vec<SyncPoint>,
    /// The batch's signal semaphores and fence (on its last job), then the queue point.
    signals: Vec<SyncPoint>,
    /// Temporary payloads the batch's waits consumed: the job waits for them, so they are
    /// destroyed only once it is in the kernel (which then holds the fences it waits for)
    /// or abandoned.
    consumed: Vec<SyncHandle>,
}

impl Job {
    /// Lets go of what the job held, once it is in the kernel.
    fn finish(self, syncs: &dyn Syncobjs) {
        for handle in self.consumed {
            syncs.destroy(handle);
        }
    }

    /// Gives the job up without running it: every point it would have signalled is
    /// signalled from the host (a timeline only forward), so that a waiter wakes and
    /// finds the device lost rather than hang.
    fn abandon(self, syncs: &dyn Syncobjs) {
        for point in &self.signals {
            let behind = point.value == 0
                || syncs
                    .query(point.handle)
                    .is_ok_and(|current| current < point.value);
            if behind {
                // Nothing more can be done for a waiter if even this fails.
                let _ = syncs.signal(*point);
            }
        }
        self.finish(syncs);
    }
}

/// What [`SubmitQueue`] guards: the held jobs, in order, and the thread.
#[derive(Debug, Default)]
struct Held {
    /// The last queue-timeline point given to a job (sent or held).
    last_point: u64,
    /// Jobs not yet in the kernel; the first is the one the thread waits for.
    jobs: VecDeque<Job>,
    /// Set by [`SubmitQueue::stop`].
    stop: bool,
    /// The submit thread, once started.
    thread: Option<JoinHandle<()>>,
}

/// A queue's submissions: its timeline (every job signals its next point) and the jobs
/// held back until what they wait for is submitted.
#[derive(Debug)]
pub struct SubmitQueue {
    syncs: Arc<dyn Syncobjs>,
    timeline: SyncHandle,
    held: Mutex<Held>,
    /// Signalled when a job is held or [`SubmitQueue::stop`] is called.
    changed: Condvar,
}

/// Whether every point of `points` is available (see the module's documentation), waiting
/// at most `timeout_ns`; more points than one kernel wait takes are checked in turn.
fn available(syncs: &dyn Syncobjs, points: &[SyncPoint], timeout_ns: u64) -> IcdResult<bool> {
    for chunk in points.chunks(MAX_WAIT_POINTS.max(1)) {
        if syncs
            .wait_available(chunk, timeout_ns)
            .map_err(sync_error)?
            == WaitOutcome::TimedOut
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Hands `job` to the device's copy engine.
fn send(dev: &Device, job: &Job) -> IcdResult<()> {
    let mut manager = lock(&dev.memory);
    let engine = manager
        .backend_mut()
        .engine()
        .ok_or(IcdError::NoCopyEngine)?;
    engine.submit(&job.cmds, &job.waits, &job.signals)?;
    Ok(())
}

impl SubmitQueue {
    /// A new queue with its timeline at 0 on `syncs`.
    pub fn new(syncs: Arc<dyn Syncobjs>) -> IcdResult<Self> {
        let timeline = syncs.create(false).map_err(sync_error)?;
        Ok(Self {
            syncs,
            timeline,
            held: Mutex::new(Held::default()),
            changed: Condvar::new(),
        })
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        lock(&self.held)
    }

    /// Whether jobs are held back now.
    pub fn holds_jobs(&self) -> bool {
        !self.held().jobs.is_empty()
    }

    /// Whether every job up to queue point `point` has run.
    pub fn reached(&self, point: u64) -> IcdResult<bool> {
        Ok(point == 0 || self.syncs.query(self.timeline).map_err(sync_error)? >= point)
    }

    /// Numbers `jobs` on the timeline and sends each to the kernel, or holds it (and every
    /// one after it) while something is held or its waits are not available. Returns the
    /// last job's point. On a refusal the device is lost and the jobs not sent are
    /// abandoned.
    fn push(self: &Arc<Self>, dev: &Arc<Device>, jobs: Vec<Job>) -> IcdResult<u64> {
        let mut held = self.held();
        let mut jobs = jobs.into_iter();
        while let Some(mut job) = jobs.next() {
            let placed = self.place(&mut held, dev, &mut job);
            match placed {
                Ok(true) => job.finish(&*self.syncs),
                Ok(false) => {
                    held.jobs.push_back(job);
                    self.changed.notify_all();
                }
                Err(e) => {
                    dev.mark_lost();
                    job.abandon(&*self.syncs);
                    for job in jobs {
                        job.abandon(&*self.syncs);
                    }
                    return Err(e);
                }
            }
        }
        Ok(held.last_point)
    }

    /// Numbers `job` and sends it if nothing is held and its waits are available
    /// (`true`); otherwise makes sure the thread runs, to hold it (`false`).
    fn place(
        self: &Arc<Self>,
        held: &mut Held,
        dev: &Arc<Device>,
        job: &mut Job,
    ) -> IcdResult<bool> {
        self.number(held, job)?;
        if held.jobs.is_empty() && available(&*self.syncs, &job.waits, 0)? {
            send(dev, job)?;
            return Ok(true);
        }
        self.start_thread(held, dev)?;
        Ok(false)
    }

    /// Gives `job` the next point of the timeline.
    fn number(&self, held: &mut Held, job: &mut Job) -> IcdResult<()> {
        let point = held
            .last_point
            .checked_add(1)
            .ok_or(IcdError::Memory(Error::DeviceLost {
                errno: extmem::backend::errno::EOVERFLOW,
            }))?;
        job.signals.push(SyncPoint {
            handle: self.timeline,
            value: point,
        });
        held.last_point = point;
        Ok(())
    }

    /// Starts the submit thread if it is not running.
    fn start_thread(self: &Arc<Self>, held: &mut Held, dev: &Arc<Device>) -> IcdResult<()> {
        if held.thread.is_some() {
            return Ok(());
        }
        let (queue, dev) = (Arc::clone(self), Arc::clone(dev));
        let thread = std::thread::Builder::new()
            .name("extmem-submit".into())
            .spawn(move || queue.run(&dev))
            .map_err(|_| IcdError::Memory(Error::OutOfHostMemory))?;
        held.thread = Some(thread);
        Ok(())
    }

    /// The submit thread: sends the held jobs in order, each once its waits are
    /// available, until [`SubmitQueue::stop`].
    fn run(&self, dev: &Device) {
        loop {
            let waits = {
                let mut held = self.held();
                loop {
                    if held.stop {
                        return;
                    }
                    if let Some(job) = held.jobs.front() {
                        break job.waits.clone();
                    }
                    held = self
                        .changed
                        .wait(held)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            // No lock held: a signal from the host, another queue or another process is
            // what makes the points available.
            let ready = available(&*self.syncs, &waits, HOLD_SLICE_NS);
            let mut held = self.held();
            if held.stop {
                return;
            }
            let sent = match ready {
                Ok(false) => continue,
                Ok(true) => match held.jobs.pop_front() {
                    Some(job) => send(dev, &job).map(|()| job.finish(&*self.syncs)),
                    None => continue,
                },
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                crate::debug::refusal("vkQueueSubmit (a held submission)", &e);
                dev.mark_lost();
                for job in held.jobs.drain(..) {
                    job.abandon(&*self.syncs);
                }
            }
        }
    }

    /// Stops the submit thread and drops the jobs still held (`vkDestroyDevice`).
    pub fn stop(&self) {
        let thread = {
            let mut held = self.held();
            held.stop = true;
            for job in held.jobs.drain(..) {
                job.finish(&*self.syncs);
            }
            held.thread.take()
        };
        self.changed.notify_all();
        if let Some(thread) = thread {
            // A panic in the thread has nothing left to clean up.
            let _ = thread.join();
        }
    }

    /// Waits until every job submitted so far, held ones included, has run.
    pub fn wait_idle(&self) -> IcdResult<()> {
        let last = self.held().last_point;
        if last == 0 {
            return Ok(());
        }
        let point = SyncPoint {
            handle: self.timeline,
            value: last,
        };
        self.syncs
            .wait(&[point], true, u64::MAX)
            .map_err(sync_error)?;
        Ok(())
    }
}

impl Drop for SubmitQueue {
    fn drop(&mut self) {
        self.syncs.destroy(self.timeline);
    }
}

/// One batch of a submission (`VkSubmitInfo`, `VkSubmitInfo2`): semaphores with the
/// timeline value to wait for or signal (ignored for binary semaphores).
#[derive(Debug, Default)]
pub struct Batch {
    /// Semaphores waited for before the batch's commands run.
    pub waits: Vec<(vk::Semaphore, u64)>,
    /// The command buffers, in order.
    pub command_buffers: Vec<vk::CommandBuffer>,
    /// Semaphores signalled once the commands have run.
    pub signals: Vec<(vk::Semaphore, u64)>,
}

/// A batch with its objects looked up and its commands gathered.
struct Resolved {
    waits: Vec<(Arc<Semaphore>, SyncPoint)>,
    cmds: Vec<Command>,
    signals: Vec<(Arc<Semaphore>, SyncPoint)>,
}

fn semaphore_point(
    device: vk::Device,
    (h, value): (vk::Semaphore, u64),
) -> IcdResult<(Arc<Semaphore>, SyncPoint)> {
    let s = SEMAPHORES.live_of(device, h)?;
    let handle = s.active();
    let value = if s.timeline { value } else { 0 };
    Ok((s, SyncPoint { handle, value }))
}

fn resolve(device: vk::Device, batch: &Batch) -> IcdResult<Resolved> {
    let points = |list: &[(vk::Semaphore, u64)]| {
        list.iter()
            .map(|w| semaphore_point(device, *w))
            .collect::<IcdResult<Vec<_>>>()
    };
    let waits = points(&batch.waits)?;
    let signals = points(&batch.signals)?;
    let mut cmds = Vec::new();
    for h in &batch.command_buffers {
        let cb = COMMAND_BUFFERS.live_of(device, *h)?;
        let recording = lock(&cb.recording);
        if recording.error.is_some() {
            return Err(IcdError::rule(Rule::SubmitExecutable, h.as_raw()));
        }
        cmds.extend_from_slice(&recording.cmds);
    }
    Ok(Resolved {
        waits,
        cmds,
        signals,
    })
}

/// `vkQueueSubmit` and `vkQueueSubmit2`: queues every batch in order (or holds them, see
/// the module's documentation), then signals `fence` after the last. A batch without
/// commands still waits and signals (the device runs a 4-byte fill of its scratch page
/// for it). A lost device, or a kernel refusal, is `VK_ERROR_DEVICE_LOST`.
pub fn submit(queue: vk::Queue, batches: &[Batch], fence: Option<vk::Fence>) -> IcdResult<()> {
    let q = QUEUES.live(queue)?;
    let dev = DEVICES.live(q.device)?;
    dev.check_status()?;
    let fence = fence.map(|f| FENCES.live_of(q.device, f)).transpose()?;
    let mut resolved = batches
        .iter()
        .map(|b| resolve(q.device, b))
        .collect::<IcdResult<Vec<_>>>()?;
    if resolved.is_empty() && fence.is_some() {
        resolved.push(Resolved {
            waits: Vec::new(),
            cmds: Vec::new(),
            signals: Vec::new(),
        });
    }
    let fence_point = fence.as_ref().map(|f| SyncPoint::binary(f.active()));
    let nop = Command::Fill {
        dst: dev.scratch,
        size: 4,
        value: 0,
    };
    let chunk_len = usize::try_from(MAX_COMMANDS).unwrap_or(1);
    let batch_count = resolved.len();
    let mut jobs = Vec::new();
    for (index, batch) in resolved.iter().enumerate() {
        let chunks: Vec<Vec<Command>> = if batch.cmds.is_empty() {
            vec![vec![nop]]
        } else {
            batch.cmds.chunks(chunk_len).map(<[_]>::to_vec).collect()
        };
        let last_chunk = chunks.len().saturating_sub(1);
        for (i, cmds) in chunks.into_iter().enumerate() {
            let mut job = Job {
                cmds,
                waits: Vec::new(),
                signals: Vec::new(),
                consumed: Vec::new(),
            };
            if i == 0 {
                job.waits = batch.waits.iter().map(|(_, p)| *p).collect();
                // The wait is submitted: a temporary payload has served, and the
                // semaphore is back on its permanent one for the application.
                for (s, _) in &batch.waits {
                    job.consumed.extend(s.take_temporary());
                }
            }
            if i == last_chunk {
                job.signals = batch.signals.iter().map(|(_, p)| *p).collect();
                if index + 1 == batch_count {
                    job.signals.extend(fence_point);
                }
            }
            jobs.push(job);
        }
    }
    let last_point = q.submits.push(&dev, jobs)?;
    // What the import rules ask (VUIDs 01142 and 01463): which objects pending work uses.
    for batch in &resolved {
        for (s, _) in batch.waits.iter().chain(&batch.signals) {
            s.last_use.store(last_point, Ordering::SeqCst);
        }
    }
    if let Some(f) = &fence {
        f.last_use.store(last_point, Ordering::SeqCst);
    }
    Ok(())
}

/// `vkQueueWaitIdle`.
pub fn wait_idle_queue(queue: vk::Queue) -> IcdResult<()> {
    let q = QUEUES.live(queue)?;
    let dev = DEVICES.live(q.device)?;
    dev.check_status()?;
    let waited = q.submits.wait_idle();
    dev.check_status()?;
    waited
}

/// `vkDeviceWaitIdle`: the device's queue.
pub fn wait_idle_device(device: vk::Device) -> IcdResult<()> {
    let dev = DEVICES.live(device)?;
    match objects::device_queue(device) {
        Some(queue) => wait_idle_queue(queue),
        None => dev.check_status(),
    }
}
