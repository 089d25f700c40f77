//! Live Vulkan handles and the objects behind them.
//!
//! Every handle the application passes in is looked up here before use; a value we did
//! not hand out (or already destroyed) is simply not found. Handles are never
//! dereferenced as pointers by the driver, so a stale or forged handle cannot make it
//! read freed memory.
//!
//! - Non-dispatchable handles are counters from one process-wide sequence, never reused.
//! - Dispatchable handles must point to memory whose first pointer-sized word the loader
//!   owns: it holds `ICD_LOADER_MAGIC` when we return the handle and the loader then
//!   stores its dispatch table there. Each dispatchable handle is therefore the address of
//!   a small heap block ([`LoaderWord`]) that we allocate, never read, and free when the
//!   object is destroyed; the block's address is the registry key.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ash::vk::{self, Handle};

use crate::error::{IcdError, IcdResult};

/// The value the loader expects in the first word of a dispatchable object
/// (`ICD_LOADER_MAGIC` in `vk_icd.h`).
pub const ICD_LOADER_MAGIC: usize = 0x01CD_C0DE;

/// Locks `mutex`, recovering the data if a panic (caught at the C boundary) poisoned it.
/// Every critical section in this crate leaves its data consistent before anything that
/// could panic, so the data is still usable.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A new non-dispatchable handle value: non-zero, never handed out before.
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The loader-owned first word of a dispatchable object.
///
/// # Invariants
/// Lives at a fixed heap address from [`LoaderWord::new`] until it is dropped; after
/// creation only the loader writes to it (through the handle), which the atomic permits.
#[derive(Debug)]
#[repr(C)]
pub struct LoaderWord(Box<AtomicUsize>);

impl LoaderWord {
    /// A new block holding [`ICD_LOADER_MAGIC`].
    pub fn new() -> Self {
        Self(Box::new(AtomicUsize::new(ICD_LOADER_MAGIC)))
    }

    /// The handle value: the block's address.
    pub fn handle(&self) -> u64 {
        let ptr: *const AtomicUsize = &*self.0;
        ptr as usize as u64
    }

    /// What the first word holds now (the magic, or the loader's dispatch pointer).
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for LoaderWord {
    fn default() -> Self {
        Self::new()
    }
}

/// One entry: the object and, for dispatchable handles, the loader's word.
#[derive(Debug)]
struct Entry<T> {
    object: Arc<T>,
    word: Option<LoaderWord>,
}

/// An object that belongs to one `VkDevice` (everything below the device): commands
/// take both handles, and a handle of another device is not found.
pub trait DeviceChild {
    /// The device it was created from.
    fn device(&self) -> vk::Device;
}

/// The live objects of one handle type `H` (an ash handle: `vk::Device`, `vk::Buffer`,
/// ...). The map is keyed by the raw value; every method takes and returns `H`, so a
/// handle of one type cannot be looked up in another type's registry.
#[derive(Debug)]
pub struct Registry<H, T> {
    live: Mutex<BTreeMap<u64, Entry<T>>>,
    handle: PhantomData<fn() -> H>,
}

impl<H: Handle + Copy, T> Default for Registry<H, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Handle + Copy, T> Registry<H, T> {
    /// An empty registry (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            live: Mutex::new(BTreeMap::new()),
            handle: PhantomData,
        }
    }

    /// Registers `object` under a new non-dispatchable handle and returns the handle.
    pub fn insert(&self, object: T) -> H {
        let id = next_id();
        lock(&self.live).insert(
            id,
            Entry {
                object: Arc::new(object),
                word: None,
            },
        );
        H::from_raw(id)
    }

    /// Registers `object` under a new dispatchable handle (the address of a fresh loader
    /// word) and returns the handle.
    pub fn insert_dispatchable(&self, object: T) -> H {
        let word = LoaderWord::new();
        let id = word.handle();
        lock(&self.live).insert(
            id,
            Entry {
                object: Arc::new(object),
                word: Some(word),
            },
        );
        H::from_raw(id)
    }

    /// The object behind `handle`, if it is live.
    pub fn get(&self, handle: H) -> Option<Arc<T>> {
        lock(&self.live)
            .get(&handle.as_raw())
            .map(|e| Arc::clone(&e.object))
    }

    /// The object behind `handle`, or the refusal naming the handle.
    pub fn live(&self, handle: H) -> IcdResult<Arc<T>> {
        self.get(handle).ok_or_else(|| IcdError::unknown(handle))
    }

    /// Unregisters `handle` and returns its object (the loader word, if any, is freed).
    pub fn remove(&self, handle: H) -> Option<Arc<T>> {
        lock(&self.live).remove(&handle.as_raw()).map(|e| e.object)
    }

    /// Unregisters every handle whose object matches `pred`, returning the objects.
    pub fn remove_where(&self, mut pred: impl FnMut(&T) -> bool) -> Vec<Arc<T>> {
        let mut live = lock(&self.live);
        let doomed: Vec<u64> = live
            .iter()
            .filter(|(_, e)| pred(&e.object))
            .map(|(k, _)| *k)
            .collect();
        doomed
            .into_iter()
            .filter_map(|k| live.remove(&k).map(|e| e.object))
            .collect()
    }

    /// The first handle (in handle order) whose object matches `pred`.
    pub fn find(&self, mut pred: impl FnMut(&T) -> bool) -> Option<H> {
        lock(&self.live)
            .iter()
            .find(|(_, e)| pred(&e.object))
            .map(|(k, _)| H::from_raw(*k))
    }

    /// Every object that matches `pred`.
    pub fn filter(&self, mut pred: impl FnMut(&T) -> bool) -> Vec<Arc<T>> {
        lock(&self.live)
            .values()
            .filter(|e| pred(&e.object))
            .map(|e| Arc::clone(&e.object))
            .collect()
    }

    /// How many handles are live.
    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    /// Whether no handle is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The loader word of a dispatchable handle (for tests).
    pub fn loader_word(&self, handle: H) -> Option<usize> {
        lock(&self.live)
            .get(&handle.as_raw())
            .and_then(|e| e.word.as_ref().map(LoaderWord::get))
    }
}

impl<H: Handle + Copy, T: DeviceChild> Registry<H, T> {
    /// The object behind `handle` if it is live and belongs to `device`.
    pub fn get_of(&self, device: vk::Device, handle: H) -> Option<Arc<T>> {
        self.get(handle).filter(|o| o.device() == device)
    }

    /// The object behind `handle` if it is live and belongs to `device`, or the refusal
    /// naming the handle.
    pub fn live_of(&self, device: vk::Device, handle: H) -> IcdResult<Arc<T>> {
        self.get_of(device, handle)
            .ok_or_else(|| IcdError::unknown(handle))
    }

    /// Unregisters `handle` if it is live and belongs to `device` (the destroy commands:
    /// a null, unknown or foreign handle is ignored).
    pub fn remove_of(&self, device: vk::Device, handle: H) -> Option<Arc<T>> {
        let mut live = lock(&self.live);
        let owned = live
            .get(&handle.as_raw())
            .is_some_and(|e| e.object.device() == device);
        if owned {
            live.remove(&handle.as_raw()).map(|e| e.object)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_and_found_until_removed() {
        let reg = Registry::<vk::Buffer, u32>::new();
        let a = reg.insert(1);
        let b = reg.insert(2);
        assert_ne!(a, b);
        assert_ne!(a, vk::Buffer::null());
        assert_eq!(reg.get(a).as_deref(), Some(&1));
        assert_eq!(reg.remove(a).as_deref(), Some(&1));
        assert!(reg.get(a).is_none());
        assert!(reg.remove(a).is_none(), "double destroy is ignored");
        assert_eq!(reg.len(), 1);
        assert!(reg.get(vk::Buffer::null()).is_none());
        assert!(reg.get(vk::Buffer::from_raw(u64::MAX)).is_none());
    }

    #[test]
    fn dispatchable_handles_start_with_the_loader_magic() {
        let reg = Registry::<vk::Device, &str>::new();
        let h = reg.insert_dispatchable("device");
        assert_eq!(reg.loader_word(h), Some(ICD_LOADER_MAGIC));
        assert_eq!(h.as_raw() % core::mem::align_of::<usize>() as u64, 0);
        // What the loader does: overwrite the first word through the handle.
        let word =
            usize::try_from(h.as_raw()).unwrap_or_else(|e| panic!("{e}")) as *const AtomicUsize;
        // SAFETY: `h` is the address of the live AtomicUsize the registry holds.
        unsafe { &*word }.store(0xdead_beef, Ordering::Relaxed);
        assert_eq!(reg.loader_word(h), Some(0xdead_beef));
        assert_eq!(reg.get(h).as_deref(), Some(&"device"));
        reg.remove(h);
        assert!(reg.is_empty());
    }

    #[test]
    fn remove_where_takes_only_matching_objects() {
        let reg = Registry::<vk::Fence, u32>::new();
        let handles: Vec<vk::Fence> = (0..6).map(|i| reg.insert(i)).collect();
        let gone = reg.remove_where(|v| v % 2 == 0);
        assert_eq!(gone.len(), 3);
        assert!(reg.get(handles[1]).is_some());
        assert!(reg.get(handles[2]).is_none());
    }

    /// A child of one device or the other.
    struct Child(vk::Device);

    impl DeviceChild for Child {
        fn device(&self) -> vk::Device {
            self.0
        }
    }

    #[test]
    fn a_handle_of_another_device_is_neither_found_nor_removed() {
        let reg = Registry::<vk::Buffer, Child>::new();
        let (mine, theirs) = (vk::Device::from_raw(0x10), vk::Device::from_raw(0x20));
        let h = reg.insert(Child(mine));
        assert!(reg.get_of(theirs, h).is_none());
        assert!(reg.remove_of(theirs, h).is_none());
        assert!(
            reg.get_of(mine, h).is_some(),
            "still live after the foreign destroy"
        );
        assert!(reg.remove_of(mine, h).is_some());
        assert!(reg.get(h).is_none());
    }
}
