//! Device drivers: a null_blk-style test block device.
#![deny(unsafe_code)]

pub mod null_blk;
