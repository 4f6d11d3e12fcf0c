//! A file held in JavaScript memory (a `Uint8Array`) read like a file: the checkpoint stays
//! outside wasm memory and each tensor is copied in only while it is converted and uploaded.

use std::io::{Read, Result, Seek, SeekFrom};

use js_sys::Uint8Array;

/// `Read + Seek` over a `Uint8Array` (up to 4 GiB).
pub struct JsBytes {
    array: Uint8Array,
    pos: u64,
    len: u64,
}

impl JsBytes {
    /// Wraps `array`; reading starts at its first byte.
    pub fn new(array: Uint8Array) -> Self {
        let len = u64::from(array.length());
        Self { array, pos: 0, len }
    }
}

impl Read for JsBytes {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if n > 0 {
            let start = self.pos as u32;
            self.array
                .subarray(start, start + n as u32)
                .copy_to(&mut buf[..n]);
            self.pos += n as u64;
        }
        Ok(n)
    }
}

impl Seek for JsBytes {
    fn seek(&mut self, to: SeekFrom) -> Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the data",
            )),
        }
    }
}
