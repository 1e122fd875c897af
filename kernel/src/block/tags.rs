//! Tags: a bitmap of request slots per hardware queue, as blk-mq's sbitmap.
//!
//! Allocation starts at the calling CPU's hint (the word after the one it
//! last allocated from), so CPUs that share a queue mostly touch different
//! words; a free clears the bit and wakes one waiter. A submitter that
//! finds no free tag sleeps on [`Tags::wait`] and tries again when a tag is
//! freed (or the queue dies).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::arch::percpu::{cpu_id, possible_cpus};
use crate::sched::WaitQueue;

/// The tags of one hardware queue.
pub struct Tags {
    words: Vec<AtomicU64>,
    depth: usize,
    /// Per CPU: the word to try first.
    hint: Vec<AtomicUsize>,
    /// Tags in use.
    used: AtomicUsize,
    /// Submitters waiting for a tag.
    pub(crate) wait: WaitQueue,
}

impl Tags {
    /// `depth` tags (at least 1).
    pub fn new(depth: usize) -> Self {
        assert!(depth >= 1, "a tag map needs at least one tag");
        Tags {
            words: (0..depth.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            depth,
            hint: (0..possible_cpus()).map(|_| AtomicUsize::new(0)).collect(),
            used: AtomicUsize::new(0),
            wait: WaitQueue::new(),
        }
    }

    /// How many tags there are.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// How many are in use now (racy).
    pub fn in_use(&self) -> usize {
        // Relaxed: a statistic.
        self.used.load(Ordering::Relaxed)
    }

    fn word_mask(&self, w: usize) -> u64 {
        let bits = (self.depth - w * 64).min(64);
        if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    /// A free tag, if any.
    pub fn try_get(&self) -> Option<usize> {
        let n = self.words.len();
        let hint = &self.hint[cpu_id()];
        // Relaxed: a hint only.
        let start = hint.load(Ordering::Relaxed) % n;
        for i in 0..n {
            let w = (start + i) % n;
            let mask = self.word_mask(w);
            // Relaxed: the fetch_or below decides.
            let mut cur = self.words[w].load(Ordering::Relaxed);
            while !cur & mask != 0 {
                let bit = (!cur & mask).trailing_zeros();
                // Acquire: pairs with the Release of the free, so whatever
                // the last user of this tag did is done before we use it.
                let old = self.words[w].fetch_or(1 << bit, Ordering::Acquire);
                if old & (1 << bit) == 0 {
                    hint.store(w, Ordering::Relaxed);
                    self.used.fetch_add(1, Ordering::Relaxed);
                    return Some(w * 64 + bit as usize);
                }
                cur = old;
            }
        }
        None
    }

    /// Frees `tag` and wakes one waiter.
    pub fn put(&self, tag: usize) {
        let (w, bit) = (tag / 64, tag % 64);
        // Release: the request's last uses come before the next owner's.
        let old = self.words[w].fetch_and(!(1 << bit), Ordering::Release);
        assert!(old & (1 << bit) != 0, "tag {tag} freed twice");
        self.used.fetch_sub(1, Ordering::Relaxed);
        self.wait.wake_one();
    }
}

crate::ktest! {
    /// Every tag of a map is handed out once, odd depths included; a freed
    /// tag comes back; depth 1 works.
    #[smp(1)]
    fn tags_hand_out_each_tag_once() {
        for depth in [1usize, 3, 64, 65, 130] {
            let t = Tags::new(depth);
            let mut got: Vec<usize> = (0..depth).map(|_| t.try_get().expect("a free tag")).collect();
            assert!(t.try_get().is_none(), "depth {depth}: more tags than the depth");
            assert_eq!(t.in_use(), depth);
            got.sort_unstable();
            assert_eq!(got, (0..depth).collect::<Vec<_>>());
            t.put(depth / 2);
            assert_eq!(t.try_get(), Some(depth / 2));
            for tag in got {
                t.put(tag);
            }
            assert_eq!(t.in_use(), 0);
        }
    }
}
