//! Per-CPU reference counts, SRCU and kref for `no_std` kernels.
#![cfg_attr(not(feature = "std"), no_std)]
