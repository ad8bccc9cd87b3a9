//! The bindings' one declaration per command ([`commands!`]): from it come the command's
//! `start_*` method (an `Operation` for the asyncio and gevent drivers), its blocking method
//! (the same operation run at once on the calling thread) and its stub, which
//! `scripts/generate.py` writes into `_native.pyi` from `_native._COMMANDS` (a test keeps
//! them equal).

use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// What the stub of one command is made of (`_native._COMMANDS`).
pub struct CommandStub {
    /// The blocking method's name; the operation's is `start_` and this.
    pub name: &'static str,
    /// Its parameters after `self`, as Python writes them (`"exptime: int = 0"`, `"*"`).
    pub params: &'static [&'static str],
    /// The blocking method's return type, as Python writes it.
    pub returns: &'static str,
    /// The doc comment's lines, as written (each with its leading space).
    pub doc: &'static [&'static str],
}

/// Declares the `Client` class's methods: the hand-written ones (in `impl`), then each
/// command once, in two lists. `derived` commands get both methods from their declaration;
/// `native` ones only their `start_*`, their blocking method being written by hand in
/// `impl` (the hot paths, which skip the operation object: `get`, `get_many`, `set`,
/// `set_many`), with the same parameters.
///
/// A command is its doc comment, `name / start_name(&self, arg: RustType [= default] =>
/// "python type [= default]", ...)` (a default is one token, so that the text signature shows
/// a literal as it is), keyword-only arguments in `* (...)`, `-> "python return type"`, an
/// optional `text "..."` (its text signature, where a default is not a literal), and a body
/// that makes the [`crate::operation::Converted`] operation: the arguments checked, the key
/// made, the core's `start_*` called, and the conversion of its output.
macro_rules! commands {
    (
        $(#[$impl_attr:meta])*
        impl $class:ident { $($methods:tt)* }
        $(
            derived {$(
                $(#[doc = $doc:literal])*
                $name:ident / $start:ident (
                    &$self:tt $(, $arg:ident: $ty:ty $(= $default:tt)? => $py:literal)* $(,)?
                )
                $(* ($($kw:ident: $kwty:ty = $kwdefault:tt => $kwpy:literal),* $(,)?))?
                -> $returns:literal
                $(text $text:literal)?
                $body:block
            )+}
        )?
        $(
            native {$(
                $(#[doc = $ndoc:literal])*
                $nname:ident / $nstart:ident (
                    &$nself:tt $(, $narg:ident: $nty:ty $(= $ndefault:tt)? => $npy:literal)* $(,)?
                )
                -> $nreturns:literal
                $(text $ntext:literal)?
                $nbody:block
            )+}
        )?
    ) => {
        $(#[$impl_attr])*
        impl $class {
            $($methods)*

            $($(
                #[doc = concat!("`", stringify!($name), "` as an `Operation` (see `", stringify!($name), "`).")]
                #[pyo3(signature = ($($arg $(= $default)?),* $(, *, $($kw = $kwdefault),*)?))]
                $(#[pyo3(text_signature = $text)])?
                #[allow(clippy::too_many_arguments)]
                fn $start(&$self $(, $arg: $ty)* $($(, $kw: $kwty)*)?) -> PyResult<PyOperation> {
                    let converted = $body;
                    Ok(converted.start(&$self.inner))
                }

                $(#[doc = $doc])*
                #[pyo3(signature = ($($arg $(= $default)?),* $(, *, $($kw = $kwdefault),*)?))]
                $(#[pyo3(text_signature = $text)])?
                #[allow(clippy::too_many_arguments)]
                fn $name(&$self, py: Python<'_> $(, $arg: $ty)* $($(, $kw: $kwty)*)?) -> PyResult<Py<PyAny>> {
                    let converted = $body;
                    converted.run(py, &$self.inner)
                }
            )+)?

            $($(
                $(#[doc = $ndoc])*
                #[doc = ""]
                #[doc = concat!("As an `Operation`: `", stringify!($nname), "` itself is written by hand.")]
                #[pyo3(signature = ($($narg $(= $ndefault)?),*))]
                $(#[pyo3(text_signature = $ntext)])?
                fn $nstart(&$nself $(, $narg: $nty)*) -> PyResult<PyOperation> {
                    let converted = $nbody;
                    Ok(converted.start(&$nself.inner))
                }
            )+)?
        }

        /// Every command's stub (`_native._COMMANDS`), in the order declared.
        pub(crate) const COMMAND_STUBS: &[$crate::declare::CommandStub] = &[
            $($($crate::declare::CommandStub {
                name: stringify!($name),
                params: &[
                    $(concat!(stringify!($arg), ": ", $py)),*
                    $(, "*" $(, concat!(stringify!($kw), ": ", $kwpy))*)?
                ],
                returns: $returns,
                doc: &[$($doc),*],
            },)+)?
            $($($crate::declare::CommandStub {
                name: stringify!($nname),
                params: &[$(concat!(stringify!($narg), ": ", $npy)),*],
                returns: $nreturns,
                doc: &[$($ndoc),*],
            },)+)?
        ];
    };
}

pub(crate) use commands;

/// `_native._COMMANDS`: each command's stub as `(name, params, returns, doc)`, for
/// `scripts/generate.py`.
pub fn install(module: &Bound<'_, PyModule>, stubs: &[CommandStub]) -> PyResult<()> {
    let py = module.py();
    let commands = stubs
        .iter()
        .map(|stub| {
            let doc: Vec<&str> = stub.doc.to_vec();
            (stub.name, stub.params.to_vec(), stub.returns, doc).into_pyobject(py)
        })
        .collect::<PyResult<Vec<_>>>()?;
    // Private: not in `__all__`.
    module.setattr("_COMMANDS", PyTuple::new(py, commands)?)
}
