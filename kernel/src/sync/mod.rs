//! Synchronisation services built on the arch layer: the rcu-sched grace
//! period ([`rcu`]) and the kernel's backend for the `refcnt` crate
//! ([`backend`]). No unsafe code here: everything unsafe is in `arch`.
#![deny(unsafe_code)]

pub mod backend;
pub mod rcu;
mod srcu_tests;
