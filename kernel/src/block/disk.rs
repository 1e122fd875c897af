//! Disks (Linux's gendisk): size, block size, read-only, a request queue,
//! a registry that lookups read under SRCU, and removal in `del_gendisk`'s
//! order.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use refcnt::srcu::{Srcu, SrcuPtr};
use spin::Once;

use super::queue::RequestQueue;
use super::{Bio, BlkError};
use crate::sched::SleepMutex;
use crate::sync::backend::Kernel;

/// What a disk looks like to its users.
#[derive(Clone, Debug)]
pub struct DiskConfig {
    /// Its name (`nullb0`, ...).
    pub name: String,
    /// Size in bytes (a multiple of the block size).
    pub capacity: u64,
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
    /// Writes are refused.
    pub read_only: bool,
}

/// A disk (see the module documentation).
pub struct Disk {
    /// What it looks like.
    pub config: DiskConfig,
    queue: Arc<RequestQueue>,
    removed: AtomicBool,
}

static RELEASED: AtomicU64 = AtomicU64::new(0);

/// How many disks have been freed (their last reference dropped) since
/// boot.
pub fn disks_released() -> u64 {
    // Acquire: a caller that sees the count sees the drop's effects.
    RELEASED.load(Ordering::Acquire)
}

impl Drop for Disk {
    fn drop(&mut self) {
        assert!(
            self.removed.load(Ordering::Relaxed) || !self.queue.is_dying(),
            "disk {} freed while its queue is half torn down",
            self.config.name
        );
        // Release: pairs with disks_released.
        RELEASED.fetch_add(1, Ordering::Release);
    }
}

/// The registry: readers look disks up under its SRCU domain; add and
/// remove publish a new list and free the old one after a grace period.
struct Registry {
    srcu: Arc<Srcu<Kernel>>,
    list: SrcuPtr<Vec<Arc<Disk>>, Kernel>,
    /// Serialises updaters (held across the replace's grace period).
    update: SleepMutex<()>,
}

fn registry() -> &'static Registry {
    static R: Once<Registry> = Once::new();
    R.call_once(|| {
        let srcu = Arc::new(Srcu::new().expect("per-CPU memory for the disk registry"));
        let list = SrcuPtr::new(&srcu, Vec::new());
        Registry {
            srcu,
            list,
            update: SleepMutex::new(()),
        }
    })
}

/// The live disk called `name`, if any.
pub fn lookup(name: &str) -> Option<Arc<Disk>> {
    let r = registry();
    let guard = r.srcu.read_lock();
    r.list
        .read(&guard)
        .iter()
        .find(|d| d.config.name == name)
        .cloned()
}

impl Disk {
    /// Registers a disk over `queue` (Linux's `add_disk`): the queue's
    /// usage counter goes per-CPU, and lookups find it.
    ///
    /// # Panics
    /// On a bad geometry or a name already registered: these are
    /// programming errors of the driver.
    pub fn add(config: DiskConfig, queue: Arc<RequestQueue>) -> Arc<Disk> {
        assert!(
            matches!(config.block_size, 512 | 4096),
            "disk {}: block size {} (512 or 4096)",
            config.name,
            config.block_size
        );
        assert!(
            config.capacity > 0 && config.capacity.is_multiple_of(config.block_size as u64),
            "disk {}: capacity {} is not a positive multiple of the block size",
            config.name,
            config.capacity
        );
        let disk = Arc::new(Disk {
            config,
            queue,
            removed: AtomicBool::new(false),
        });
        disk.queue.register();
        let r = registry();
        let _update = r.update.lock();
        let mut list: Vec<Arc<Disk>> = {
            let guard = r.srcu.read_lock();
            r.list.read(&guard).clone()
        };
        assert!(
            list.iter().all(|d| d.config.name != disk.config.name),
            "disk {} registered twice",
            disk.config.name
        );
        list.push(disk.clone());
        drop(
            r.list
                .replace(list)
                .expect("registry update outside its read section"),
        );
        disk
    }

    /// Its request queue.
    pub fn queue(&self) -> &Arc<RequestQueue> {
        &self.queue
    }

    /// Size in sectors of 512 bytes.
    pub fn capacity_sectors(&self) -> u64 {
        self.config.capacity / 512
    }

    /// Whether it was removed.
    pub fn is_removed(&self) -> bool {
        // Acquire: pairs with the swap in remove.
        self.removed.load(Ordering::Acquire)
    }

    /// Checks a bio against the disk: range, alignment, direction.
    pub fn check(&self, bio: &Bio) -> Result<(), BlkError> {
        let len = bio.data.len() as u64;
        let bs = self.config.block_size;
        if len == 0 {
            return Err(BlkError::Empty);
        }
        if !bio.offset.is_multiple_of(bs as u64) || !len.is_multiple_of(bs as u64) {
            return Err(BlkError::Misaligned {
                offset: bio.offset,
                len,
                block_size: bs,
            });
        }
        if bio
            .offset
            .checked_add(len)
            .is_none_or(|end| end > self.config.capacity)
        {
            return Err(BlkError::OutOfRange {
                sector: bio.offset / 512,
                sectors: len / 512,
                capacity: self.capacity_sectors(),
            });
        }
        if bio.op == super::Op::Write && self.config.read_only {
            return Err(BlkError::ReadOnly);
        }
        if self.is_removed() {
            return Err(BlkError::Dead);
        }
        Ok(())
    }

    /// Submits a bio. On success its `end_io` runs once, when it completes;
    /// on refusal the bio comes back with the reason and nothing ran.
    pub fn submit(&self, bio: Bio) -> Result<(), (BlkError, Bio)> {
        if let Err(e) = self.check(&bio) {
            return Err((e, bio));
        }
        let Bio {
            op,
            offset,
            data,
            nowait,
            end_io,
        } = bio;
        self.queue
            .submit(op, offset, data, nowait, end_io)
            .map_err(|(e, data, end_io)| {
                (
                    e,
                    Bio {
                        op,
                        offset,
                        data,
                        nowait,
                        end_io,
                    },
                )
            })
    }

    /// Removes the disk, in `del_gendisk`'s order: mark the queue dying
    /// (new I/O fails fast, sleepers wake and fail), freeze it and wait for
    /// the drain, quiesce it, tell the driver to tear the device down
    /// ([`Driver::teardown`](super::Driver::teardown)), then unregister it;
    /// the registry drops its
    /// reference only after a grace period of its SRCU domain, so no lookup
    /// still holds it. Returns false (and changes nothing) if it was
    /// already removed.
    pub fn remove(self: &Arc<Self>) -> bool {
        // AcqRel: one remover; submitters that see it fail (Acquire).
        if self.removed.swap(true, Ordering::AcqRel) {
            crate::println!(
                "block: {}: removed twice; the second remove did nothing",
                self.config.name
            );
            return false;
        }
        self.queue.mark_dying();
        self.queue.freeze();
        assert!(
            self.queue.usage_is_zero(),
            "{}: drained with requests in flight",
            self.config.name
        );
        self.queue.quiesce();
        self.queue.teardown_driver();
        let r = registry();
        let _update = r.update.lock();
        let list: Vec<Arc<Disk>> = {
            let guard = r.srcu.read_lock();
            r.list
                .read(&guard)
                .iter()
                .filter(|d| !Arc::ptr_eq(d, self))
                .cloned()
                .collect()
        };
        // Waits for a grace period, then frees the old list (and with it
        // the registry's reference to this disk).
        drop(
            r.list
                .replace(list)
                .expect("registry update outside its read section"),
        );
        true
    }
}
