//! lz4 for values marked with [`FLAG_LZ4`](super::FLAG_LZ4): the block format with the
//! uncompressed size prepended (4 bytes, little-endian), as python-lz4's
//! `lz4.block.compress(store_size=True)` writes it; the size is checked against the cap
//! before anything is allocated.

use super::InflateError;

/// The lz4 form of `data` when it is smaller than `data`.
pub fn compress(data: &[u8]) -> Option<Vec<u8>> {
    // Values past 4 GiB cannot have their size prepended (and are never this large here).
    u32::try_from(data.len()).ok()?;
    let out = lz4_flex::block::compress_prepend_size(data);
    (out.len() < data.len()).then_some(out)
}

/// Decompresses `data`, refusing one whose declared size is past `cap` (nothing allocated) or
/// that does not decompress to exactly that size.
pub fn inflate(data: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
    let corrupt =
        |error: lz4_flex::block::DecompressError| InflateError::Corrupt(error.to_string());
    let (size, block) = lz4_flex::block::uncompressed_size(data).map_err(corrupt)?;
    if size > cap {
        return Err(InflateError::TooLarge { cap });
    }
    let out = lz4_flex::block::decompress(block, size).map_err(corrupt)?;
    if out.len() != size {
        return Err(InflateError::Corrupt(
            "shorter than its declared size".to_owned(),
        ));
    }
    Ok(out)
}
