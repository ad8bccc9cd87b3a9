//! zstd for values marked with [`FLAG_ZSTD`](super::FLAG_ZSTD): one frame per value with its
//! size declared (readable by any zstd, e.g. Python's `zstandard`), optionally with a trained
//! dictionary; reads bounded like zlib's.

use std::cell::RefCell;
use std::io::Read;

use zstd::dict::{DecoderDictionary, EncoderDictionary};
use zstd::zstd_safe;

use super::InflateError;

/// zstd's own default level: as fast as zlib's fastest, smaller than zlib's default.
pub const LEVEL: i32 = 3;

/// A dictionary loaded from `zstd_dictionary`, prepared once for both directions.
pub struct Dictionary {
    /// Its id, which every frame compressed with it carries (0 for a raw-content dictionary,
    /// which frames cannot name: such a file is refused).
    pub id: u32,
    encoder: EncoderDictionary<'static>,
    decoder: DecoderDictionary<'static>,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Dictionary {
    /// The dictionary `bytes` (as `zstd --train` or `train` makes them), or why not: one
    /// without zstd's dictionary header has no id, so its frames could not be told apart.
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        let id = zstd_safe::get_dict_id_from_dict(bytes)
            .ok_or_else(|| "it is not a zstd dictionary (no dictionary header)".to_owned())?;
        Ok(Dictionary {
            id: id.get(),
            encoder: EncoderDictionary::copy(bytes, LEVEL),
            decoder: DecoderDictionary::copy(bytes),
        })
    }
}

thread_local! {
    /// This thread's contexts without a dictionary, made once: a context's allocation costs
    /// more than compressing a small value.
    static CONTEXTS: RefCell<Option<(zstd::bulk::Compressor<'static>, zstd::bulk::Decompressor<'static>)>> =
        const { RefCell::new(None) };
}

/// `run` with this thread's contexts (made on first use), or `None` if zstd cannot make them.
fn with_contexts<T>(
    run: impl FnOnce(&mut zstd::bulk::Compressor<'static>, &mut zstd::bulk::Decompressor<'static>) -> T,
) -> Option<T> {
    CONTEXTS.with(|cell| {
        let mut contexts = cell.try_borrow_mut().ok()?;
        if contexts.is_none() {
            let made = (
                zstd::bulk::Compressor::new(LEVEL).ok()?,
                zstd::bulk::Decompressor::new().ok()?,
            );
            *contexts = Some(made);
        }
        let (compressor, decompressor) = contexts.as_mut()?;
        Some(run(compressor, decompressor))
    })
}

/// The zstd form of `data` (with the dictionary if given) when it is smaller than `data`.
pub fn compress(data: &[u8], dictionary: Option<&Dictionary>) -> Option<Vec<u8>> {
    let out = match dictionary {
        Some(dictionary) => zstd::bulk::Compressor::with_prepared_dictionary(&dictionary.encoder)
            .ok()?
            .compress(data)
            .ok()?,
        None => with_contexts(|compressor, _| compressor.compress(data))?.ok()?,
    };
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
            let out = match dictionary {
                Some(d) => zstd::bulk::Decompressor::with_prepared_dictionary(&d.decoder)
                    .map_err(corrupt)?
                    .decompress(data, size),
                None => with_contexts(|_, decompressor| decompressor.decompress(data, size))
                    .ok_or_else(|| InflateError::Corrupt("no zstd context".to_owned()))?,
            }
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
        Some(d) => zstd::stream::read::Decoder::with_prepared_dictionary(data, &d.decoder),
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
