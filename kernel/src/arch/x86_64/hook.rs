//! Hooks: how the arch layer calls code above it without naming it.
//!
//! An interrupt handler (the timer tick, the grace-period IPI), the end
//! of an rcu-sched read-side section, an application processor's first
//! instruction in Rust and the fatal path all have work to hand to the
//! layers above (the scheduler, rcu-sched, the test harness). Arch does
//! not import them: each such place reads a [`Hook`], a function pointer
//! that the upper layer sets once at init, before the event can happen
//! (for interrupts: before they are enabled). A hook that is not set yet
//! is skipped, and the caller documents what it does instead.
//!
//! A hook is a [`spin::Once`] of a `Copy` value: reading it is one
//! `Acquire` load of the state word and one load of the pointer, with no
//! lock, so the timer tick's path stays a load and an indirect call.
//! Setting it twice is a bug and panics: hooks are wired at boot, once.

use spin::Once;

/// A function (or a `Copy` bundle of functions) that an upper layer
/// registers once; see the module documentation.
pub struct Hook<F> {
    name: &'static str,
    f: Once<F>,
}

impl<F: Copy> Hook<F> {
    /// An unset hook; `name` says what it is in the double-set panic.
    pub const fn new(name: &'static str) -> Self {
        Hook {
            name,
            f: Once::new(),
        }
    }

    /// Registers `f`. Call once, at init, before the event the hook
    /// serves can happen.
    ///
    /// # Panics
    /// If the hook is set already.
    pub fn set(&self, f: F) {
        let mut fresh = false;
        self.f.call_once(|| {
            fresh = true;
            f
        });
        assert!(fresh, "the {} hook is set twice", self.name);
    }

    /// The registered function, or `None` before [`Hook::set`].
    #[inline(always)]
    pub fn get(&self) -> Option<F> {
        // `Once::get` is an Acquire load: pairs with the Release that
        // completes `call_once`, so `f` is seen whole.
        self.f.get().copied()
    }
}
