//! The compression stage of a value: zlib for values marked with flag 8, as pymemcache's
//! `CompressedSerde` and pylibmc's `min_compress_len` write them, and zstd ([`zstd`]) or lz4
//! ([`lz4`]) under flag bits of ours. Writes are compressed with the client's compressor when
//! asked for; reads are decompressed whatever the setting (so a fleet can switch compressor
//! gradually), bounded so that a small value cannot inflate without limit (a decompression
//! bomb).

use std::sync::Arc;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

pub mod lz4;
pub mod zstd;

/// The flag bit of a zlib-compressed value (pymemcache's `FLAG_COMPRESSED`, pylibmc's
/// `PYLIBMC_FLAG_ZLIB`).
pub const FLAG_ZLIB: u32 = 1 << 3;
/// The flag bit of a zstd-compressed value (ours: see `format.rs`).
pub const FLAG_ZSTD: u32 = 1 << 11;
/// The flag bit of an lz4-compressed value (ours: see `format.rs`).
pub const FLAG_LZ4: u32 = 1 << 12;
/// Every compressor's bit.
pub const FLAGS: u32 = FLAG_ZLIB | FLAG_ZSTD | FLAG_LZ4;

/// Most bytes a compressed value may inflate to when `max_value_length` is not set: the
/// default `max_value_length` bounds what is stored, and a compressed value is meant to be
/// larger than what it stores. Documented in the README.
pub const DEFAULT_INFLATED_CAP: usize = 64 * 1024 * 1024;

/// Values from this length are (de)compressed with the GIL released; smaller ones take a few
/// microseconds, less than handing the GIL over and waiting to get it back under contention.
pub const GIL_RELEASE_LEN: usize = 16 * 1024;

/// The first output buffer of a decompression, before it has to grow (by doubling).
const FIRST_INFLATE_BUFFER: usize = 16 * 1024;

/// The compressor of writes (`OPTIONS["compressor"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    Zlib,
    Zstd,
    Lz4,
}

impl Compressor {
    /// Its flag bit.
    pub fn flag(self) -> u32 {
        match self {
            Compressor::Zlib => FLAG_ZLIB,
            Compressor::Zstd => FLAG_ZSTD,
            Compressor::Lz4 => FLAG_LZ4,
        }
    }
}

/// When and how writes are compressed, and how far reads may inflate.
#[derive(Debug, Clone)]
pub struct Compression {
    /// What compresses writes (reads honour every compressor).
    pub compressor: Compressor,
    /// The zstd dictionary of `zstd_dictionary`: zstd writes use it, and reads of frames
    /// compressed with it (frames name their dictionary).
    pub zstd_dictionary: Option<Arc<zstd::Dictionary>>,
    /// Values of at least this many bytes (as serialized) are compressed; 0: none are.
    pub min_len: usize,
    /// zlib's level, 1 (fastest) to 9 (smallest) (zstd uses its default, lz4 has none).
    pub level: u32,
    /// Most bytes a compressed value may inflate to (and most a value may have to be
    /// compressed: a larger one could not be read back).
    pub inflated_cap: usize,
}

/// Why a compressed value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InflateError {
    /// It would inflate past the cap (only the cap was ever allocated).
    TooLarge { cap: usize },
    /// It is not a whole stream of its compressor (or needs a zstd dictionary not loaded).
    Corrupt(String),
}

impl std::fmt::Display for InflateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InflateError::TooLarge { cap } => write!(
                f,
                "it inflates past {cap} bytes (max_value_length, or 64 MiB when unset)"
            ),
            InflateError::Corrupt(why) => write!(f, "it is not valid compressed data ({why})"),
        }
    }
}

impl Compression {
    /// Whether a serialized value of `len` bytes is to be compressed.
    pub fn applies_to(&self, len: usize) -> bool {
        self.min_len != 0 && len >= self.min_len && len <= self.inflated_cap
    }

    /// The compressed form of `data` and its flag bit, when it is smaller than `data`.
    pub fn compress(&self, data: &[u8]) -> Option<(u32, Vec<u8>)> {
        let out = match self.compressor {
            Compressor::Zlib => self.deflate(data),
            Compressor::Zstd => zstd::compress(data, self.zstd_dictionary.as_deref()),
            Compressor::Lz4 => lz4::compress(data),
        }?;
        Some((self.compressor.flag(), out))
    }

    /// Decompresses `data` marked with the compressor bit `flag` (exactly one of [`FLAGS`]),
    /// to [`Compression::inflated_cap`] bytes at most.
    pub fn decompress(&self, flag: u32, data: &[u8]) -> Result<Vec<u8>, InflateError> {
        let cap = self.inflated_cap;
        match flag {
            FLAG_ZLIB => inflate(data, cap),
            FLAG_ZSTD => zstd::inflate(data, cap, self.zstd_dictionary.as_deref()),
            FLAG_LZ4 => lz4::inflate(data, cap),
            _ => Err(InflateError::Corrupt(format!(
                "flags {flag} name more than one compressor"
            ))),
        }
    }

    /// The zlib form of `data` when it is smaller than `data`, else `None`. The output buffer
    /// is never larger than `data`: compression stops as soon as it could not win.
    fn deflate(&self, data: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len());
        let mut deflater = Compress::new(flate2::Compression::new(self.level), true);
        match deflater.compress_vec(data, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) if out.len() < data.len() => Some(out),
            _ => None,
        }
    }
}

/// Inflates the zlib stream `data`, refusing (before allocating more than `cap` + 1 bytes)
/// one that would come to more than `cap` bytes.
pub fn inflate(data: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
    let limit = cap.saturating_add(1);
    let first = data
        .len()
        .saturating_mul(4)
        .max(FIRST_INFLATE_BUFFER)
        .min(limit);
    let mut out = Vec::with_capacity(first);
    let mut inflater = Decompress::new(true);
    loop {
        let consumed = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
        let rest = data.get(consumed..).unwrap_or_default();
        let status = inflater
            .decompress_vec(rest, &mut out, FlushDecompress::Finish)
            .map_err(|error| InflateError::Corrupt(error.to_string()))?;
        if out.len() > cap {
            return Err(InflateError::TooLarge { cap });
        }
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if out.len() < out.capacity() {
            // Room was left and the stream did not end: the input ran out first.
            return Err(InflateError::Corrupt("truncated stream".to_owned()));
        }
        // Full: grow by doubling, to one byte past the cap at most (to see it overflow).
        let target = out.capacity().saturating_mul(2).min(limit);
        if target <= out.len() {
            return Err(InflateError::TooLarge { cap });
        }
        out.reserve_exact(target - out.len());
    }
}

#[cfg(test)]
mod tests {
    //! Compression and its bounds with plain bytes (no Python), run by `cargo test`.
    use super::*;

    fn settings(compressor: Compressor, min_len: usize, level: u32, cap: usize) -> Compression {
        Compression {
            compressor,
            zstd_dictionary: None,
            min_len,
            level,
            inflated_cap: cap,
        }
    }

    fn zlib(data: &[u8], level: u32) -> Vec<u8> {
        let on = settings(Compressor::Zlib, 1, level, usize::MAX);
        on.compress(data).unwrap().1
    }

    #[test]
    fn round_trips_and_keeps_only_a_smaller_form() {
        let text = b"the same words again and again ".repeat(4000);
        for level in 1..=9 {
            let packed = zlib(&text, level);
            assert!(packed.len() < text.len() / 10);
            assert_eq!(inflate(&packed, text.len()).unwrap(), text);
        }
        let on = settings(Compressor::Zlib, 1, 6, 1 << 20);
        // Incompressible bytes: the form would be larger, so there is none.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift64: bytes with no pattern zlib can use.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        assert_eq!(on.compress(&noise), None);
        assert_eq!(on.compress(b""), None);
    }

    #[test]
    fn applies_from_min_len_up_to_the_cap() {
        let on = settings(Compressor::Zlib, 100, 6, 1000);
        assert!(!on.applies_to(99));
        assert!(on.applies_to(100));
        assert!(on.applies_to(1000));
        assert!(!on.applies_to(1001));
        let off = Compression {
            min_len: 0,
            ..on.clone()
        };
        assert!(!off.applies_to(500));
    }

    #[test]
    fn a_bomb_is_refused_at_the_cap() {
        // 64 MiB of zeros compress to about 64 KiB.
        let zeros = vec![0_u8; 64 << 20];
        let bomb = zlib(&zeros, 9);
        assert!(bomb.len() < 100 << 10);
        drop(zeros);
        assert_eq!(
            inflate(&bomb, 1 << 20),
            Err(InflateError::TooLarge { cap: 1 << 20 })
        );
        // Exactly at the cap is fine; one byte short is not.
        let exact = zlib(&[7_u8; 5000], 6);
        assert_eq!(inflate(&exact, 5000).unwrap().len(), 5000);
        assert_eq!(
            inflate(&exact, 4999),
            Err(InflateError::TooLarge { cap: 4999 })
        );
    }

    #[test]
    fn corrupt_and_truncated_streams_are_refused() {
        let packed = zlib(&b"abc".repeat(1000), 6);
        assert!(matches!(
            inflate(&packed[..packed.len() / 2], 1 << 20),
            Err(InflateError::Corrupt(_))
        ));
        assert!(matches!(
            inflate(b"not zlib at all", 1 << 20),
            Err(InflateError::Corrupt(_))
        ));
        assert!(matches!(
            inflate(b"", 1 << 20),
            Err(InflateError::Corrupt(_))
        ));
        let mut flipped = packed.clone();
        if let Some(byte) = flipped.get_mut(packed.len() / 2) {
            *byte ^= 0x55;
        }
        assert!(inflate(&flipped, 1 << 20).is_err());
    }

    #[test]
    fn zstd_and_lz4_round_trip_and_keep_only_a_smaller_form() {
        let text = b"the same words again and again ".repeat(4000);
        for compressor in [Compressor::Zlib, Compressor::Zstd, Compressor::Lz4] {
            let on = settings(compressor, 1, 6, 1 << 20);
            let (flag, packed) = on.compress(&text).unwrap();
            assert_eq!(flag, compressor.flag());
            assert!(packed.len() < text.len() / 10, "{compressor:?}");
            assert_eq!(on.decompress(flag, &packed).unwrap(), text);
            assert_eq!(on.compress(b"ab"), None, "{compressor:?}");
        }
        let on = settings(Compressor::Zlib, 1, 6, 1 << 20);
        assert!(on.decompress(FLAG_ZSTD | FLAG_LZ4, b"x").is_err());
    }

    #[test]
    fn zstd_and_lz4_bombs_are_refused_at_the_cap() {
        let zeros = vec![0_u8; 8 << 20];
        for compressor in [Compressor::Zstd, Compressor::Lz4] {
            let writer = settings(compressor, 1, 6, usize::MAX);
            let (flag, bomb) = writer.compress(&zeros).unwrap();
            let reader = settings(Compressor::Zlib, 1, 6, 1 << 20);
            assert_eq!(
                reader.decompress(flag, &bomb),
                Err(InflateError::TooLarge { cap: 1 << 20 }),
                "{compressor:?}"
            );
            let exact = settings(Compressor::Zlib, 1, 6, 8 << 20);
            assert_eq!(exact.decompress(flag, &bomb).unwrap().len(), 8 << 20);
        }
    }

    #[test]
    fn a_zstd_stream_without_a_declared_size_is_read_to_the_cap_only() {
        use std::io::Write;
        let mut encoder = ::zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        for _ in 0..64 {
            encoder.write_all(&[0_u8; 1 << 20]).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(::zstd::zstd_safe::get_frame_content_size(&bomb)
            .unwrap()
            .is_none());
        assert_eq!(
            zstd::inflate(&bomb, 1 << 20, None),
            Err(InflateError::TooLarge { cap: 1 << 20 })
        );
        assert_eq!(
            zstd::inflate(&bomb, 64 << 20, None).unwrap().len(),
            64 << 20
        );
    }

    #[test]
    fn corrupt_zstd_and_lz4_are_refused() {
        let text = b"abc".repeat(1000);
        for compressor in [Compressor::Zstd, Compressor::Lz4] {
            let on = settings(compressor, 1, 6, 1 << 20);
            let (flag, packed) = on.compress(&text).unwrap();
            assert!(on.decompress(flag, &packed[..packed.len() / 2]).is_err());
            assert!(on.decompress(flag, b"").is_err());
            assert!(on.decompress(flag, b"not compressed at all").is_err());
        }
        // lz4: a size claim past the cap is refused before anything is allocated.
        assert_eq!(
            lz4::inflate(&[0xff, 0xff, 0xff, 0x7f, 0, 0], 1 << 20),
            Err(InflateError::TooLarge { cap: 1 << 20 })
        );
    }

    #[test]
    fn a_zstd_dictionary_is_needed_for_its_frames() {
        let samples: Vec<Vec<u8>> = (0..500)
            .map(|i| {
                format!("{{\"id\":{i},\"user\":\"user{i}\",\"tz\":\"Europe/Paris\"}}").into_bytes()
            })
            .collect();
        let trained = ::zstd::dict::from_samples(&samples, 2048).unwrap();
        let dictionary = Arc::new(zstd::Dictionary::new(&trained).unwrap());
        let with = Compression {
            zstd_dictionary: Some(Arc::clone(&dictionary)),
            ..settings(Compressor::Zstd, 1, 6, 1 << 20)
        };
        let value = b"{\"id\":9999,\"user\":\"user9999\",\"tz\":\"Europe/Paris\"}";
        let (flag, packed) = with.compress(value).unwrap();
        assert_eq!(with.decompress(flag, &packed).unwrap(), value);
        let without = settings(Compressor::Zstd, 1, 6, 1 << 20);
        assert!(matches!(
            without.decompress(flag, &packed),
            Err(InflateError::Corrupt(why)) if why.contains("dictionary")
        ));
        assert!(zstd::Dictionary::new(b"not a dictionary").is_err());
    }
}
