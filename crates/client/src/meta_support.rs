//! Whether a node speaks memcached's meta protocol: unknown until the first command that uses
//! meta commands probes it (with `mn`, see `single`), then kept on the node, so a node
//! replaced by a new one is probed again.

use std::sync::atomic::{AtomicU8, Ordering};

const SPEAKS_META: u8 = 1;
const CLASSIC_ONLY: u8 = 2;

/// Whether a node speaks the meta protocol: unknown (0) until its first probe.
#[derive(Debug, Default)]
pub(crate) struct MetaSupport(AtomicU8);

impl MetaSupport {
    /// `Some(true)` / `Some(false)` once probed.
    pub(crate) fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Acquire) {
            SPEAKS_META => Some(true),
            CLASSIC_ONLY => Some(false),
            _ => None,
        }
    }

    pub(crate) fn set(&self, speaks_meta: bool) {
        let state = if speaks_meta {
            SPEAKS_META
        } else {
            CLASSIC_ONLY
        };
        self.0.store(state, Ordering::Release);
    }
}
