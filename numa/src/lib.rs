//! `numa`: host topology read from a sysfs root, thread pinning, NUMA memory binding and
//! huge-page allocation with reported fallbacks. It depends on no workspace crate.
//!
//! Not built yet (issue 3): this crate holds only this description until then.
