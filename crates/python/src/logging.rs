//! Rust log records to Python's `logging`, and silence once the interpreter shuts down.
//!
//! Background threads (the discovery refresher) may log at any time; once Python exits, records
//! are dropped rather than entering an interpreter being finalized.

use log::{LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;

use crate::shutdown;

struct UntilShutdown(pyo3_log::Logger);

impl Log for UntilShutdown {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // pyo3-log may take the GIL to read a logger's level.
        shutdown::enter().is_some() && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        // pyo3-log takes the GIL itself: the pass keeps exit waiting until it is done.
        if let Some(_pass) = shutdown::enter() {
            self.0.log(record);
        }
    }

    fn flush(&self) {}
}

/// Routes Rust log records (info and above) to Python loggers named after their target: the
/// Rust module (`elasticache_client.discovery`, ...), or for failure records the client's
/// `logger` option (default `elasticache_client.failures`), until the interpreter exits.
pub fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    // Levels are not cached: records are rare (membership changes, failures), and a level set
    // after import (logging.config, pytest's caplog) must take effect.
    let logger = pyo3_log::Logger::new(py, pyo3_log::Caching::Loggers)?.filter(LevelFilter::Info);
    if log::set_boxed_logger(Box::new(UntilShutdown(logger))).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
    Ok(())
}
