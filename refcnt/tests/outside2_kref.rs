//! A second outside user's tests: refcnt::kref against Linux's kref and
//! refcount_t (include/linux/kref.h, include/linux/refcount.h,
//! Documentation/core-api/kref.rst) and the crate's docs. Tests are named
//! k01..
//!
//! Written as black-box tests from Linux's documented semantics (the
//! headers and Documentation/ named above) by an outside user of the
//! crate, beside `linux_semantics.rs` and `outside_kref.rs`. Not under
//! Miri, as those files.
#![cfg(all(feature = "std", not(loom), not(miri)))]
mod outside_common;
use outside_common::{recorded, Record};

use refcnt::kref::Kref;
use refcnt::misuse::misuse_count;
use refcnt::Misuse;

/// refcount_inc on 0 is a use-after-free: reported, the count saturates
/// and the object is never released again; a saturated count stays
/// saturated and get_unless_zero succeeds on it.
#[test]
fn k02_get_on_zero_reports_and_saturates() {
    let k = Kref::<Record>::with_report();
    assert!(k.put(|| {}));
    assert_eq!(recorded(), []);
    k.get();
    assert_eq!(recorded(), [Misuse::KrefUseAfterZero]);
    assert!(k.is_saturated());
    let mut released = false;
    for _ in 0..10 {
        assert!(!k.put(|| released = true));
    }
    assert!(!released);
    assert!(k.is_saturated());
    assert!(k.get_unless_zero());
    assert!(k.is_saturated());
}

/// The default Kref (no report hook of its own) counts its reports in
/// misuse_count.
#[test]
fn k05_default_kref_counts_misuse() {
    let before = misuse_count(Misuse::KrefUseAfterZero);
    let k = Kref::new();
    assert!(k.put(|| {}));
    k.get();
    assert!(misuse_count(Misuse::KrefUseAfterZero) > before);
}
