//! zstd for values marked with [`FLAG_ZSTD`](super::FLAG_ZSTD): one frame per value with its
//! size declared (readable by any zstd, e.g. Python's `zstandard`), optionally with a trained
//! dictionary; reads bounded like zlib's.

use std::cell::RefCell;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;

use zstd::bulk::{Compressor, Decompressor};
use zstd::zstd_safe;

use super::InflateError;

/// zstd's own default level: as fast as zlib's fastest, smaller than zlib's default.
pub const LEVEL: i32 = 3;

/// A dictionary loaded from `zstd_dictionary`.
pub struct Dictionary {
    /// Its id, which every frame compressed with it carries (0 for a raw-content dictionary,
    /// which frames cannot name: such a file is refused).
    pub id: u32,
    /// A hash of its bytes: which dictionary a thread's contexts hold.
    key: u64,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary")
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl Dictionary {
    /// The dictionary `bytes` (as `zstd --train` or `train` makes them), or why not: one
    /// without zstd's dictionary header has no id, so its frames could not be told apart.
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        let id = zstd_safe::get_dict_id_from_dict(bytes)
            .ok_or_else(|| "it is not a zstd dictionary (no dictionary header)".to_owned())?;
        // Loaded once here, so that a dictionary zstd cannot use is refused at start.
        Compressor::with_dictionary(LEVEL, bytes).map_err(|error| error.to_string())?;
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        Ok(Dictionary {
            id: id.get(),
            key: hasher.finish(),
            bytes: bytes.to_vec(),
        })
    }
}

/// A thread's compression and decompression contexts, with a dictionary loaded or none.
struct Contexts {
    /// The [`Dictionary::key`] of the dictionary loaded into them.
    dictionary: Option<u64>,
    compressor: Compressor<'static>,
    decompressor: Decompressor<'static>,
}

thread_local! {
    /// This thread's contexts, without and with a dictionary, made on first use (and for
    /// another dictionary): making a context, and loading a dictionary into it, costs more
    /// than compressing a small value.
    static CONTEXTS: RefCell<[Option<Contexts>; 2]> = const { RefCell::new([None, None]) };
}

/// `run` with this thread's contexts for `dictionary`, or `None` if zstd cannot make them.
fn with_contexts<T>(
    dictionary: Option<&Dictionary>,
    run: impl FnOnce(&mut Contexts) -> T,
) -> Option<T> {
    CONTEXTS.with(|cell| {
        let mut slots = cell.try_borrow_mut().ok()?;
        let wanted = dictionary.map(|d| d.key);
        let slot = slots.get_mut(usize::from(dictionary.is_some()))?;
        if slot.as_ref().is_none_or(|c| c.dictionary != wanted) {
            let (compressor, decompressor) = match dictionary {
                Some(d) => (
                    Compressor::with_dictionary(LEVEL, &d.bytes).ok()?,
                    Decompressor::with_dictionary(&d.bytes).ok()?,
                ),
                None => (Compressor::new(LEVEL).ok()?, Decompressor::new().ok()?),
            };
            *slot = Some(Contexts {
                dictionary: wanted,
                compressor,
                decompressor,
            });
        }
        slot.as_mut().map(run)
    })
}

/// The zstd form of `data` (with the dictionary if given) when it is smaller than `data`.
pub fn compress(data: &[u8], dictionary: Option<&Dictionary>) -> Option<Vec<u8>> {
    let out = with_contexts(dictionary, |c| c.compressor.compress(data))?.ok()?;
    (out.len() < data.len()).then_some(out)
}

/// Decompresses the zstd frames `data`, refusing (before allocating more than `cap` + 1 bytes)
/// what would come to more than `cap` bytes, and a frame compressed with a dictionary other
/// than `dictionary`.
pub fn inflate(
    data: &[u8],
    cap: usize,
    dictionary: Option<&Dictionary>,
) -> Result<Vec<u8>, InflateError> {
    let corrupt = |error: std::io::Error| InflateError::Corrupt(error.to_string());
    let dictionary = match (zstd_safe::get_dict_id_from_frame(data), dictionary) {
        (None, _) => None,
        (Some(id), Some(ours)) if id.get() == ours.id => Some(ours),
        (Some(id), _) => {
            return Err(InflateError::Corrupt(format!(
                "it was compressed with zstd dictionary {id}, which this client does not have"
            )))
        }
    };
    // One frame that declares its size (what this module writes): checked, then allocated once.
    if let Ok(Some(size)) = zstd_safe::get_frame_content_size(data) {
        if size > u64::try_from(cap).unwrap_or(u64::MAX) {
            return Err(InflateError::TooLarge { cap });
        }
        if zstd_safe::find_frame_compressed_size(data) == Ok(data.len()) {
            let size = usize::try_from(size).map_err(|_| InflateError::TooLarge { cap })?;
            let out = with_contexts(dictionary, |c| c.decompressor.decompress(data, size))
                .ok_or_else(|| InflateError::Corrupt("no zstd context".to_owned()))?
                .map_err(corrupt)?;
            if out.len() != size {
                return Err(InflateError::Corrupt(
                    "shorter than its declared size".to_owned(),
                ));
            }
            return Ok(out);
        }
    }
    // Frames without a declared size (a streaming writer), or several: read to one byte past
    // the cap at most.
    let decoder = match dictionary {
        Some(d) => zstd::stream::read::Decoder::with_dictionary(data, &d.bytes),
        None => zstd::stream::read::Decoder::with_buffer(data),
    };
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    decoder
        .map_err(corrupt)?
        .take(limit)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() > cap {
        return Err(InflateError::TooLarge { cap });
    }
    Ok(out)
}

/// `_native.train_zstd_dictionary(samples, size)`: a dictionary of at most `size` bytes
/// trained on `samples` (zstd's `ZDICT_trainFromBuffer`, with the GIL released), for
/// `OPTIONS["zstd_dictionary"]`. `ValueError` when zstd cannot train one (too few or too
/// small samples).
#[pyo3::pyfunction]
pub fn train_zstd_dictionary(
    py: pyo3::Python<'_>,
    samples: Vec<Vec<u8>>,
    size: usize,
) -> pyo3::PyResult<std::borrow::Cow<'static, [u8]>> {
    py.detach(|| zstd::dict::from_samples(&samples, size))
        .map(std::borrow::Cow::Owned)
        .map_err(|error| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "cannot train a zstd dictionary on {} samples: {error}",
                samples.len()
            ))
        })
}
