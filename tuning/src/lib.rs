//! `tuning`: probe a host, plan a sequencer config for it, and check a host against a config.
//!
//! Not built yet (issue 3): this crate holds only this description until then.
