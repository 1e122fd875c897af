//! [`SrcuPtr`]: a heap value that readers borrow inside SRCU read sections
//! and updaters replace.
//!
//! This is the one place in the crate's algorithms that needs `unsafe`: a
//! reader's `&T` points into a `Box` that an updater may swap out at any
//! moment, and only the SRCU protocol, which the compiler cannot see,
//! keeps the box alive until the reader's section ends. Everything unsafe
//! is the raw pointer to that box. The rule it relies on:
//!
//! * **(P)** a box is dropped (or handed back to the caller) only after it
//!   was unpublished (swapped out of `ptr`) *and* a grace period of the
//!   pointer's domain that began after the unpublish has ended, or when the
//!   pointer is owned exclusively (`&mut self` / `self`).
//!
//! A reader's `&T` lives no longer than both its guard (a section of that
//! same domain, checked at run time) and `&self`, so by the SRCU guarantee
//! every reader that could have loaded the old pointer has left its section
//! before the box is dropped.
#![allow(unsafe_code)]

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use super::{Inner, Kind, Srcu, SrcuError, SrcuReadGuard};
use crate::backend::Backend;
use crate::sync::atomic::{AtomicPtr, Ordering};

/// A heap value protected by an SRCU domain (Linux's `__rcu` pointer with
/// `srcu_dereference`, `rcu_assign_pointer` and the free after
/// `synchronize_srcu`). Readers borrow it inside a read section of the same
/// domain for as long as they hold the section; an updater publishes a new
/// value and gets the old one back (or has it dropped) only after a grace
/// period. Never null.
///
/// # Invariants
///
/// `ptr` always holds a pointer from `Box::into_raw` that this value owns
/// (it is null only while [`into_inner`](SrcuPtr::into_inner) drops it);
/// a pointer swapped out is freed only under rule (P) of the module
/// documentation of `ptr.rs`.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::{Srcu, SrcuPtr}};
/// let srcu = Srcu::<Host>::new().unwrap();
/// let config = SrcuPtr::new(&srcu, String::from("v1"));
/// {
///     let g = srcu.read_lock();
///     assert_eq!(config.read(&g), "v1");
/// }
/// let old = config.replace(String::from("v2")).unwrap();
/// assert_eq!(old, "v1");
/// ```
pub struct SrcuPtr<T, B: Backend> {
    ptr: AtomicPtr<T>,
    domain: Arc<Inner<B>>,
    _owns: PhantomData<Box<T>>,
}

// `Send`/`Sync` are the automatic ones: the pointer is `Sync` when `T` is
// (readers on several threads share `&T`), and every method that moves a
// `T` across threads through `&self` (`replace`, `replace_deferred`)
// requires `T: Send`.

impl<T, B: Backend> SrcuPtr<T, B> {
    /// Publishes `value`, protected by `srcu`. The pointer keeps the
    /// domain's shared state alive.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::{Srcu, SrcuPtr}};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let p = SrcuPtr::new(&srcu, 5u32);
    /// assert_eq!(*p.read(&srcu.read_lock()), 5);
    /// ```
    pub fn new<K: Kind>(srcu: &Srcu<B, K>, value: T) -> Self {
        // INVARIANT: a fresh box, owned by the new pointer.
        SrcuPtr {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(value))),
            domain: Arc::clone(&srcu.inner),
            _owns: PhantomData,
        }
    }

    /// The current value, borrowed for as long as both the pointer and the
    /// read section last (Linux's `srcu_dereference`).
    ///
    /// # Panics
    ///
    /// If `guard` is a section of another domain: that section would not
    /// keep this value alive.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::{Srcu, SrcuPtr}};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let p = SrcuPtr::new(&srcu, [1, 2, 3]);
    /// let g = srcu.read_lock();
    /// let v = p.read(&g);
    /// assert_eq!(v[1], 2);
    /// ```
    pub fn read<'a, K: Kind>(&'a self, guard: &'a SrcuReadGuard<'_, B, K>) -> &'a T {
        assert!(
            Arc::ptr_eq(&guard.srcu.inner, &self.domain),
            "SrcuPtr::read: guard of srcu domain {} used for a pointer of domain {}",
            guard.srcu.inner.id,
            self.domain.id
        );
        // Acquire: pairs with the Release (AcqRel) swap that published the
        // box, so its contents are initialised for us.
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: (1) `p` came from `Box::into_raw` and is never null (type
        // invariant); (2) the box is freed only under rule (P): after a
        // grace period of this domain that began after `p` was unpublished.
        // We loaded `p` inside the section `guard` (a section of this
        // domain, checked above), so either that grace period waits for our
        // section, or it began before we entered and we could not have
        // loaded `p`. The returned borrow ends no later than the guard, so
        // it ends before the box is freed; (3) `&self` outlives the borrow,
        // so `Drop`/`get_mut` (which need `&mut self`) cannot run meanwhile.
        unsafe { &*p }
    }

    /// Exclusive access to the current value: no reader can hold it, since
    /// readers borrow `&self`.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::{Srcu, SrcuPtr}};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let mut p = SrcuPtr::new(&srcu, 1);
    /// *p.get_mut() += 1;
    /// assert_eq!(*p.read(&srcu.read_lock()), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        // Relaxed: `&mut self` already orders us after every other access.
        let p = self.ptr.load(Ordering::Relaxed);
        // SAFETY: owned, non-null box (type invariant); `&mut self` excludes
        // readers (they borrow `&self`) and other updaters.
        unsafe { &mut *p }
    }

    /// Publishes `value` and takes the old value out, without waiting.
    /// It stays a raw pointer: readers may still hold `&T` into it, and a
    /// `Box` would claim it is unique.
    fn swap(&self, value: T) -> Retired<T> {
        let new = Box::into_raw(Box::new(value));
        // AcqRel: Release publishes the new box's contents to readers'
        // Acquire loads; Acquire makes the old box's contents (published by
        // whoever stored it) visible to us, who will drop or return it.
        let old = self.ptr.swap(new, Ordering::AcqRel);
        // INVARIANT (of `Retired`): `old` came from `Box::into_raw` (type
        // invariant), is non-null, and, now unpublished, is owned by nobody
        // else: each swap takes out a different pointer.
        Retired(NonNull::new(old).expect("SrcuPtr is never null"))
    }

    /// Publishes `value`, waits for a grace period
    /// ([`Srcu::synchronize`]), and returns the old value, which no reader
    /// can be using any more.
    ///
    /// # Errors
    ///
    /// [`SrcuError::SyncInReadSection`] if called inside a read section of
    /// the pointer's domain, where detected (as for
    /// [`Srcu::synchronize`]). The new value is published anyway; the old one
    /// is dropped by a callback after a grace period
    /// ([`replace_deferred`](SrcuPtr::replace_deferred)): the update the
    /// caller asked for still happens, safely, and only the old value,
    /// which could not be handed back without the wait, is not returned.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::{Srcu, SrcuPtr}};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let p = SrcuPtr::new(&srcu, 1);
    /// assert_eq!(p.replace(2).unwrap(), 1);
    /// ```
    pub fn replace(&self, value: T) -> Result<T, SrcuError>
    where
        T: Send + 'static,
    {
        if let Err(e) = self.domain.check_not_reader() {
            self.replace_deferred(value);
            return Err(e);
        }
        let old = self.swap(value);
        // Rule (P): the grace period's cookie is taken after the swap.
        self.domain.wait_for(self.domain.snap(), false);
        Ok(*old.into_box())
    }

    /// Publishes `value` and has the old value dropped by a callback after
    /// a grace period ([`Srcu::call`]); never waits. May be called inside a
    /// read section.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::{Srcu, SrcuPtr}};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let p = SrcuPtr::new(&srcu, vec![1]);
    /// p.replace_deferred(vec![2]);
    /// srcu.barrier().unwrap(); // the old vector is gone now
    /// ```
    pub fn replace_deferred(&self, value: T)
    where
        T: Send + 'static,
    {
        let old = self.swap(value);
        // Rule (P): `call` takes its cookie after the swap, and runs the
        // callback only after that grace period.
        self.domain.call(Box::new(move || drop(old.into_box())));
    }

    /// The current value; the pointer is consumed, so no reader holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::{Srcu, SrcuPtr}};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// assert_eq!(SrcuPtr::new(&srcu, 'x').into_inner(), 'x');
    /// ```
    pub fn into_inner(self) -> T {
        // INVARIANT: null only from here until `self` is dropped below,
        // which `Drop` allows for.
        let p = self.ptr.swap(ptr::null_mut(), Ordering::Relaxed);
        drop(self);
        // SAFETY: owned, non-null box (type invariant), taken out of the
        // pointer, so freed exactly once, here; we own `self`, so no reader
        // holds it.
        *unsafe { Box::from_raw(p) }
    }
}

/// A value taken out of an [`SrcuPtr`] that readers may still be using.
/// Leaks if dropped; [`Retired::into_box`] after a grace period frees it.
///
/// # Invariants
///
/// The pointer came from `Box::into_raw`, is owned by this value alone, and
/// is no longer published.
struct Retired<T>(NonNull<T>);

// SAFETY: a `Retired<T>` owns a `T` (type invariant) and gives access to it
// only through `into_box`, so sending it sends a `T`.
unsafe impl<T: Send> Send for Retired<T> {}

impl<T> Retired<T> {
    /// The value as a `Box`. Call only once a grace period that began after
    /// the value was unpublished has ended (rule (P)).
    fn into_box(self) -> Box<T> {
        // SAFETY: from `Box::into_raw`, owned by us alone (type invariant);
        // callers keep rule (P), so no reader's `&T` into it is live any
        // more and a unique `Box` is allowed.
        unsafe { Box::from_raw(self.0.as_ptr()) }
    }
}

impl<T, B: Backend> Drop for SrcuPtr<T, B> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` orders us after every reader (they borrow
        // `&self`).
        let p = self.ptr.load(Ordering::Relaxed);
        if !p.is_null() {
            // SAFETY: owned box (type invariant; null only after
            // `into_inner` took it); no reader can hold a borrow (they
            // borrow `&self`), so rule (P) holds trivially.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

impl<T: fmt::Debug, B: Backend> fmt::Debug for SrcuPtr<T, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrcuPtr")
            .field("domain", &self.domain.id)
            .finish_non_exhaustive()
    }
}
