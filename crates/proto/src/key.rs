//! The byte-level rules a memcached text-protocol key must follow.

use thiserror::Error;

/// The longest key memcached accepts, in bytes.
pub const MAX_KEY_LEN: usize = 250;

/// Why a key cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The key has no bytes.
    #[error("the key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes (its length is given).
    #[error("the key is {0} bytes long, over memcached's limit of {MAX_KEY_LEN}")]
    TooLong(usize),
    /// The key contains a control byte or a space (the first such byte is given).
    #[error("the key contains byte {0:#04x}: control characters and spaces are not allowed")]
    IllegalByte(u8),
}

/// Checks that `key` can be written on a command line without changing its meaning.
///
/// A space, CR, LF or any control byte would let a key split the command line or smuggle in a
/// second command, so they are refused rather than escaped.
pub fn validate_key(key: &[u8]) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(key.len()));
    }
    match key.iter().find(|&&b| b <= b' ' || b == 0x7f) {
        Some(&b) => Err(KeyError::IllegalByte(b)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_and_utf8() {
        assert_eq!(validate_key(b"a:1:b"), Ok(()));
        assert_eq!(validate_key("日本".as_bytes()), Ok(()));
        assert_eq!(validate_key(&[b'k'; MAX_KEY_LEN]), Ok(()));
    }

    #[test]
    fn refuses_what_would_break_the_command_line() {
        assert_eq!(validate_key(b""), Err(KeyError::Empty));
        assert_eq!(
            validate_key(&[b'k'; MAX_KEY_LEN + 1]),
            Err(KeyError::TooLong(251))
        );
        assert_eq!(validate_key(b"a b"), Err(KeyError::IllegalByte(b' ')));
        assert_eq!(
            validate_key(b"a\r\nflush_all"),
            Err(KeyError::IllegalByte(b'\r'))
        );
        assert_eq!(validate_key(b"a\x00"), Err(KeyError::IllegalByte(0)));
        assert_eq!(validate_key(b"a\x7f"), Err(KeyError::IllegalByte(0x7f)));
    }
}
