//! What reads return: an [`Item`], a node's [`Stats`], and the buffers a batch's values are
//! read into ([`BatchValues`]: one copy out of the connection buffers, no allocation per small
//! value).

use bytes::Bytes;

/// A node's `stats`, as name/value pairs in the order the server sent them.
pub type Stats = Vec<(String, String)>;

/// A value read from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The flags stored with the value (its type, for the serializer that wrote it).
    pub flags: u32,
    /// The value's bytes (a cheap-to-clone, shared buffer: `&item.data[..]` is a slice).
    pub data: Bytes,
    /// The CAS token, when read with `gets`.
    pub cas: Option<u64>,
}

/// Values up to this size share one allocation per batch; larger ones get their own, so a
/// batch of large values never needs a second buffer as large as all of them.
const SHARED_VALUE_MAX: usize = 4 * 1024;

/// The most a batch reserves for its small values before it has seen them all.
const SHARED_RESERVE_MAX: usize = 1024 * 1024;

/// The values a `get_many` read, copied once out of the connection buffers, by position in
/// the batch's keys.
#[derive(Debug)]
pub struct BatchValues {
    /// The small values, back to back.
    shared: Vec<u8>,
    /// Per value read: its flags, and either its range in `shared` or its own buffer (its
    /// position is the one whose `index` entry points here).
    kept: Vec<(u32, Kept)>,
    /// Per position: the index of its value in `kept`, if one was read.
    index: Vec<Option<u32>>,
}

#[derive(Debug)]
enum Kept {
    Shared(std::ops::Range<usize>),
    Own(Vec<u8>),
}

impl BatchValues {
    pub(crate) fn new(count: usize) -> Self {
        BatchValues {
            shared: Vec::new(),
            kept: Vec::with_capacity(count),
            index: vec![None; count],
        }
    }

    pub(crate) fn keep(&mut self, position: usize, flags: u32, data: &[u8]) {
        let kept = if data.len() <= SHARED_VALUE_MAX {
            if self.shared.capacity() == 0 {
                // Values of one batch tend to be alike: room for as many more as there are
                // keys, within reason, instead of growing from nothing.
                self.shared
                    .reserve((data.len() * self.index.len()).min(SHARED_RESERVE_MAX));
            }
            let start = self.shared.len();
            self.shared.extend_from_slice(data);
            Kept::Shared(start..self.shared.len())
        } else {
            Kept::Own(data.to_vec())
        };
        if let (Some(slot), Ok(at)) = (self.index.get_mut(position), u32::try_from(self.kept.len()))
        {
            *slot = Some(at);
            self.kept.push((flags, kept));
        }
    }

    /// The size of the value read for `position`, if one was.
    pub(crate) fn size(&self, position: usize) -> Option<usize> {
        let at = usize::try_from((*self.index.get(position)?)?).ok()?;
        match &self.kept.get(at)?.1 {
            Kept::Shared(range) => Some(range.len()),
            Kept::Own(data) => Some(data.len()),
        }
    }

    /// A copy of the value read for `position`, if one was (for the local tier, which keeps
    /// its own).
    pub(crate) fn item(&self, position: usize) -> Option<Item> {
        let at = usize::try_from((*self.index.get(position)?)?).ok()?;
        let (flags, kept) = self.kept.get(at)?;
        let data = match kept {
            Kept::Shared(range) => self.shared.get(range.clone())?,
            Kept::Own(data) => data.as_slice(),
        };
        Some(Item {
            flags: *flags,
            data: Bytes::copy_from_slice(data),
            cas: None,
        })
    }

    /// Keeps a value the batch made itself (a large value joined from its chunks), without
    /// copying it.
    pub(crate) fn keep_owned(&mut self, position: usize, flags: u32, data: Vec<u8>) {
        if let (Some(slot), Ok(at)) = (self.index.get_mut(position), u32::try_from(self.kept.len()))
        {
            *slot = Some(at);
            self.kept.push((flags, Kept::Own(data)));
        }
    }

    /// Whether a value was read for `position`.
    pub(crate) fn has(&self, position: usize) -> bool {
        matches!(self.index.get(position), Some(Some(_)))
    }

    /// Forgets the values of `positions` (their node failed after sending some).
    pub(crate) fn forget(&mut self, positions: impl IntoIterator<Item = usize>) {
        for position in positions {
            if let Some(slot) = self.index.get_mut(position) {
                *slot = None;
            }
        }
    }

    /// Hands `visit` the position, flags and bytes of each value read, in the order of the
    /// batch's keys. A large value's buffer is freed as soon as `visit` returns, so a caller
    /// converting values never holds two full copies of a large batch.
    pub fn try_for_each<E>(
        mut self,
        mut visit: impl FnMut(usize, u32, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for (position, at) in self.index.iter().enumerate() {
            let Some(entry) = at.and_then(|at| self.kept.get_mut(usize::try_from(at).ok()?)) else {
                continue;
            };
            let (flags, kept) = entry;
            match kept {
                Kept::Shared(range) => {
                    if let Some(data) = self.shared.get(range.clone()) {
                        visit(position, *flags, data)?;
                    }
                }
                Kept::Own(data) => {
                    let data = std::mem::take(data);
                    visit(position, *flags, &data)?;
                }
            }
        }
        Ok(())
    }

    /// How many keys the batch had.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the batch had no keys.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The items, aligned with the batch's keys (`None` for a miss).
    pub(crate) fn into_items(self) -> Vec<Option<Item>> {
        let shared = Bytes::from(self.shared);
        let mut kept: Vec<Option<Item>> = self
            .kept
            .into_iter()
            .map(|(flags, kept)| {
                let data = match kept {
                    Kept::Shared(range) => shared.slice(range),
                    Kept::Own(data) => Bytes::from(data),
                };
                Some(Item {
                    flags,
                    data,
                    cas: None,
                })
            })
            .collect();
        self.index
            .iter()
            .map(|at| {
                let at = usize::try_from((*at)?).ok()?;
                kept.get_mut(at)?.take()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_values_come_in_key_order_without_the_forgotten_ones() {
        let large = vec![b'x'; SHARED_VALUE_MAX + 1];
        let mut values = BatchValues::new(4);
        values.keep(2, 16, b"two");
        values.keep(0, 0, &large);
        values.keep(3, 2, b"3");
        values.forget([3]);
        let mut seen = Vec::new();
        values
            .try_for_each(|position, flags, data| {
                seen.push((position, flags, data.to_vec()));
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(seen, vec![(0, 0, large), (2, 16, b"two".to_vec())]);
    }
}
