//! Text from a guest's chunks: the bytes of a model's tokens may split a
//! UTF-8 character between chunks (a byte-level model emits one byte at a
//! time), while every OpenAI object carries whole text. [`Utf8Pieces`]
//! gives the text each chunk completes and keeps an unfinished character
//! for the next; bytes that can never be UTF-8 become U+FFFD exactly as
//! `String::from_utf8_lossy` makes them over the whole output (and as
//! Python's `bytes.decode("utf-8", "replace")` does: one replacement per
//! maximal invalid subpart). Pure.

/// An incremental, lossy UTF-8 decoder.
#[derive(Debug, Default)]
pub(crate) struct Utf8Pieces {
    pending: Vec<u8>,
}

impl Utf8Pieces {
    /// The text `bytes` complete, with what was pending before them; a
    /// character still unfinished at the end waits for the next call.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut at = 0;
        while at < self.pending.len() {
            match std::str::from_utf8(&self.pending[at..]) {
                Ok(text) => {
                    out.push_str(text);
                    at = self.pending.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[at..at + valid]).expect("checked valid"),
                    );
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            at += valid + bad;
                        }
                        // An unfinished character at the end: keep it.
                        None => {
                            at += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..at);
        out
    }

    /// What is left at the end of the output: an unfinished character is
    /// one U+FFFD.
    pub(crate) fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(chunks: &[&[u8]]) -> Vec<String> {
        let mut d = Utf8Pieces::default();
        let mut out: Vec<String> = chunks.iter().map(|c| d.push(c)).collect();
        out.push(d.finish());
        out
    }

    #[test]
    fn characters_split_between_chunks_come_whole() {
        // "é" is C3 A9; "€" is E2 82 AC.
        for (chunks, want) in [
            (&[&b"ab"[..], b"c"][..], vec!["ab", "c", ""]),
            (&[&[0xc3][..], &[0xa9]], vec!["", "é", ""]),
            (
                &[&[0xe2][..], &[0x82], &[0xac, b'!']],
                vec!["", "", "€!", ""],
            ),
            (&[&[0xff][..], b"x"], vec!["\u{fffd}", "x", ""]),
            (&[&[0xe2, 0x82][..], b"x"], vec!["", "\u{fffd}x", ""]),
            (&[&[0xe2, 0x82][..]], vec!["", "\u{fffd}"]),
        ] {
            assert_eq!(pieces(chunks), want, "{chunks:?}");
        }
    }

    /// Any bytes, split anywhere, decode as the whole would.
    #[test]
    fn pieces_join_to_the_lossy_whole() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let len = (next() % 40) as usize;
            // Mostly bytes near the UTF-8 lead and continuation ranges.
            let bytes: Vec<u8> = (0..len)
                .map(|_| match next() % 4 {
                    0 => b'a' + (next() % 26) as u8,
                    1 => 0x80 | (next() % 0x40) as u8,
                    2 => 0xc0 | (next() % 0x38) as u8,
                    _ => next() as u8,
                })
                .collect();
            let mut d = Utf8Pieces::default();
            let mut joined = String::new();
            let mut at = 0;
            while at < bytes.len() {
                let n = 1 + (next() % 4) as usize;
                let end = (at + n).min(bytes.len());
                joined.push_str(&d.push(&bytes[at..end]));
                at = end;
            }
            joined.push_str(&d.finish());
            assert_eq!(joined, String::from_utf8_lossy(&bytes), "{bytes:x?}");
        }
    }
}
