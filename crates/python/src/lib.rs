//! The `django_elasticache_rs._native` extension module: PyO3 bindings of `elasticache-client`.
//!
//! Arguments are converted here, the GIL is released around all network I/O, and client errors
//! become the package's Python exceptions in one place (`errors`). Nothing here knows Django.

mod args;
mod client;
mod completion;
mod compress;
mod declare;
#[cfg(target_os = "linux")]
mod epoll;
mod errors;
mod events;
mod fork;
mod format;
mod keys;
mod logging;
mod metrics;
mod operation;
mod options;
mod poller;
mod serde;
mod serializers;
mod shutdown;
mod sign;

use pyo3::prelude::*;

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    shutdown::install(module)?;
    logging::install(module)?;
    fork::install(module)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    args::install(module)?;
    options::install(module)?;
    module.add_class::<client::PyClient>()?;
    declare::install(module, client::COMMAND_STUBS)?;
    module.add_class::<operation::PyOperation>()?;
    module.add_class::<poller::Poller>()?;
    poller::install(module)?;
    module.add_class::<serde::Undecodable>()?;
    operation::install(module)?;
    module.add_function(wrap_pyfunction!(keys::murmur3_32, module)?)?;
    module.add_function(wrap_pyfunction!(
        compress::zstd::train_zstd_dictionary,
        module
    )?)?;
    Ok(())
}
