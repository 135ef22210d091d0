//! Big-endian TPM marshaling: a bounds-checked reader and append-only writers.

use crate::Error;

/// A cursor over marshaled bytes; every read is bounds checked and reports the structure it was
/// reading.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Added to `pos` in error offsets, when `data` is a slice of a larger input.
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            base: 0,
        }
    }

    /// A reader over `data`, which starts at `base` in the whole input (for error offsets).
    pub(crate) fn with_base(data: &'a [u8], base: usize) -> Self {
        Self { data, pos: 0, base }
    }

    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.data.len()
    }

    pub(crate) fn bytes(&mut self, n: usize, structure: &'static str) -> Result<&'a [u8], Error> {
        let rest = &self.data[self.pos..];
        if rest.len() < n {
            return Err(Error::Truncated {
                structure,
                offset: self.offset(),
                needed: n - rest.len(),
            });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    pub(crate) fn u16(&mut self, structure: &'static str) -> Result<u16, Error> {
        let b = self.bytes(2, structure)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, structure: &'static str) -> Result<u32, Error> {
        let b = self.bytes(4, structure)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A TPM2B: a u16 size, at most `max`, then that many bytes.
    pub(crate) fn tpm2b(&mut self, max: usize, structure: &'static str) -> Result<&'a [u8], Error> {
        let size = usize::from(self.u16(structure)?);
        if size > max {
            return Err(Error::Oversize {
                structure,
                size,
                max,
            });
        }
        self.bytes(size, structure)
    }

    /// Fails with [`Error::TrailingBytes`] unless everything was read.
    pub(crate) fn finish(&self, structure: &'static str) -> Result<(), Error> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                structure,
                offset: self.offset(),
                count: self.data.len() - self.pos,
            })
        }
    }
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends `contents` as a TPM2B (u16 size prefix), failing if it is longer than `max`.
pub(crate) fn put_tpm2b(
    out: &mut Vec<u8>,
    contents: &[u8],
    max: usize,
    structure: &'static str,
) -> Result<(), Error> {
    let size = u16::try_from(contents.len())
        .ok()
        .filter(|&s| usize::from(s) <= max)
        .ok_or(Error::Oversize {
            structure,
            size: contents.len(),
            max,
        })?;
    put_u16(out, size);
    out.extend_from_slice(contents);
    Ok(())
}

/// Appends a TPM2B whose contents are known to be small (digests, keys, seeds): their lengths
/// are bounded by the callers, far below `u16::MAX`.
pub(crate) fn put_small_tpm2b(out: &mut Vec<u8>, contents: &[u8]) {
    debug_assert!(contents.len() <= usize::from(u16::MAX));
    put_u16(out, contents.len() as u16);
    out.extend_from_slice(contents);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_offsets() {
        let mut r = Reader::with_base(&[0, 3, 1, 2], 10);
        let err = r.tpm2b(8, "X").unwrap_err();
        assert!(matches!(
            err,
            Error::Truncated {
                structure: "X",
                offset: 12,
                needed: 1
            }
        ));
    }

    #[test]
    fn tpm2b_respects_max() {
        let mut r = Reader::new(&[0, 3, 1, 2, 3]);
        assert!(matches!(
            r.tpm2b(2, "X"),
            Err(Error::Oversize {
                size: 3,
                max: 2,
                ..
            })
        ));
        let mut out = Vec::new();
        assert!(put_tpm2b(&mut out, &[1, 2, 3], 2, "X").is_err());
        put_tpm2b(&mut out, &[1, 2, 3], 3, "X").unwrap();
        assert_eq!(out, [0, 3, 1, 2, 3]);
    }

    #[test]
    fn finish_reports_trailing_bytes() {
        let mut r = Reader::new(&[0, 1, 2]);
        r.u16("X").unwrap();
        assert!(matches!(
            r.finish("X"),
            Err(Error::TrailingBytes {
                offset: 2,
                count: 1,
                ..
            })
        ));
    }
}
