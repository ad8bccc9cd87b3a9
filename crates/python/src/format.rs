//! The flag bits of a stored value: pymemcache's and pylibmc's (bits 0-4), and ours (bits
//! 8-15), placed so that neither of them ever misreads a value in one of our formats.
//!
//! pymemcache and pylibmc look at bits 0-4 only (pickle 1, int 2, long 4, zlib 8, text 16):
//! a value with none of them set is plain bytes to both. So a value with any of our bits set
//! carries its bits 0-4 moved up to bits 16-20, and 0 in bits 0-4: a foreign reader sees the
//! stored bytes as they are (it neither unpickles nor inflates them), and we move the bits
//! back down on reading. A value without our bits is stored exactly as pymemcache stores it.

/// pymemcache's `pickle_serde` bits (pylibmc's too): raw bytes, pickle, `int`, pylibmc's
/// `int`, text; zlib (bit 8) is `compress::FLAG_ZLIB`.
pub const FLAG_BYTES: u32 = 0;
pub const FLAG_PICKLE: u32 = 1 << 0;
pub const FLAG_INTEGER: u32 = 1 << 1;
pub const FLAG_LONG: u32 = 1 << 2;
pub const FLAG_TEXT: u32 = 1 << 4;

/// Our bits: the serializers', the compressors', the signature's; 14 and 15 are free. (Bit
/// 24 is the core's large-value index, `LARGE_FLAG`, outside both ranges.)
pub const OURS: u32 = 0xff00;
/// pymemcache's and pylibmc's bits.
pub const CLASSIC: u32 = 0x1f;
/// Where the classic bits of a value with any of ours go.
const CLASSIC_SHIFT: u32 = 16;

/// The flags to store for `flags` (classic and our bits together).
pub fn pack(flags: u32) -> u32 {
    if flags & OURS == 0 {
        flags
    } else {
        (flags & OURS) | ((flags & CLASSIC) << CLASSIC_SHIFT)
    }
}

/// The classic and our bits of stored `flags` (the inverse of [`pack`]).
pub fn unpack(flags: u32) -> u32 {
    if flags & OURS == 0 {
        flags
    } else {
        (flags & OURS) | ((flags >> CLASSIC_SHIFT) & CLASSIC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_flags_are_stored_as_they_are_and_ours_move_them_up() {
        for classic in [0, 1, 2, 4, 16, 1 | 8, 16 | 8] {
            assert_eq!(pack(classic), classic);
            assert_eq!(unpack(classic), classic);
            let ours = classic | (1 << 11) | (1 << 13);
            let stored = pack(ours);
            assert_eq!(stored & CLASSIC, 0, "foreign readers see bytes");
            assert_eq!(unpack(stored), ours);
        }
    }
}
