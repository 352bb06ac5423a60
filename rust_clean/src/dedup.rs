//! Deduplication over kept records, in input order: exact keys and MinHash + LSH near duplicates.
//!
//! Signatures are computed in the parallel workers; the tables here are filled by the one thread that
//! sees records in input order, so the first of a group is always the one kept.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

use crate::text::{is_key_char, key_lower, ASCII_KEY};
#[cfg(test)]
use crate::text::alnum_key;
#[cfg(test)]
use xxhash_rust::xxh3::xxh3_128;

/// Word n-gram size of near-duplicate shingles.
const SHINGLE_WORDS: usize = 5;
/// MinHash permutations, split into LSH bands of `ROWS` rows.
pub const PERMUTATIONS: usize = 64;
const ROWS: usize = 4;
const BANDS: usize = PERMUTATIONS / ROWS;
/// Estimated Jaccard similarity from which a record is a near duplicate.
pub const NEAR_THRESHOLD: f64 = 0.8;

pub type Signature = [u32; PERMUTATIONS];

/// The tables' keys are xxh3 hashes already: hashing them again (SipHash) would only cost time.
#[derive(Default)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64 ^ (n >> 64) as u64;
    }
}

type PrehashedMap<K, V> = HashMap<K, V, BuildHasherDefault<PrehashedKey>>;

/// 128-bit hash of the exact-dedup key (`alnum_key`: lower-cased letters, numbers and marks of the
/// description, which cleaning has put in NFC).
pub fn exact_key(description: &str) -> u128 {
    // The key streams through a small buffer instead of being built: 128-byte ASCII blocks go through
    // the table branch-free; a block with other characters is walked a character at a time.
    const BLOCK: usize = 128;
    let mut hasher = Xxh3::new();
    let mut buf = [0u8; 2 * BLOCK + 16];
    let mut n = 0;
    let bytes = description.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let end = (i + BLOCK).min(bytes.len());
        if bytes[i..end].is_ascii() {
            // Branch-free: every byte is written, only key bytes advance the cursor.
            for &c in &bytes[i..end] {
                let k = ASCII_KEY[c as usize];
                buf[n] = k;
                n += (k != 0) as usize;
            }
            i = end;
        } else {
            // Up to the first char boundary at or after `end`; a lower-cased char takes at most 12 bytes.
            for c in description[i..].chars() {
                if i >= end {
                    break;
                }
                i += c.len_utf8();
                if c.is_ascii() {
                    let k = ASCII_KEY[c as usize];
                    buf[n] = k;
                    n += (k != 0) as usize;
                } else if is_key_char(c) {
                    for l in key_lower(c) {
                        n += l.encode_utf8(&mut buf[n..]).len();
                    }
                }
            }
        }
        if n >= BLOCK {
            hasher.update(&buf[..n]);
            n = 0;
        }
    }
    hasher.update(&buf[..n]);
    hasher.digest128()
}

/// Seeded multiply-shift permutations of 64-bit shingle hashes.
#[derive(Clone)]
pub struct MinHasher {
    mul: [u64; PERMUTATIONS],
    add: [u64; PERMUTATIONS],
    seed: u64,
}

impl MinHasher {
    pub fn new(seed: u64) -> Self {
        let draw = |i: usize, salt: u64| xxh3_64_with_seed(&(i as u64).to_le_bytes(), seed ^ salt);
        MinHasher {
            mul: std::array::from_fn(|i| draw(i, 0x6d69_6e68_6173_6801) | 1),
            add: std::array::from_fn(|i| draw(i, 0x6d69_6e68_6173_6802)),
            seed,
        }
    }

    /// MinHash of the set of word 5-grams (one shingle of all words when there are fewer). Words are runs
    /// of `is_key_char` characters of the lower-cased text (NFC after cleaning, so one spelling a word).
    pub fn signature(&self, description: &str) -> Signature {
        // Words are hashed once; a shingle's hash combines its words' hashes, no strings are built.
        let lower = description.to_lowercase();
        let word_hashes: Vec<u64> = lower
            .split(|c: char| !is_key_char(c))
            .filter(|w| !w.is_empty())
            .map(|w| xxh3_64_with_seed(w.as_bytes(), self.seed))
            .collect();
        let mut sig = [u32::MAX; PERMUTATIONS];
        let window = SHINGLE_WORDS.min(word_hashes.len().max(1));
        let mut bytes = [0u8; 8 * SHINGLE_WORDS];
        for gram in word_hashes.windows(window) {
            for (dst, h) in bytes.chunks_exact_mut(8).zip(gram) {
                dst.copy_from_slice(&h.to_le_bytes());
            }
            let h = xxh3_64_with_seed(&bytes[..8 * gram.len()], self.seed);
            for (slot, (m, a)) in sig.iter_mut().zip(self.mul.iter().zip(&self.add)) {
                *slot = (*slot).min((m.wrapping_mul(h).wrapping_add(*a) >> 32) as u32);
            }
        }
        sig
    }
}

/// The records kept so far, with what later records are compared against.
pub struct Deduper {
    exact: Option<PrehashedMap<u128, u64>>,
    near: Option<NearIndex>,
}

/// Which kept record a new one duplicates: its record number.
pub enum Verdict {
    Unique,
    Duplicate { of: u64 },
    NearDuplicate { of: u64 },
}

impl Deduper {
    pub fn new(exact: bool, near: bool) -> Self {
        Deduper { exact: exact.then(PrehashedMap::default), near: near.then(NearIndex::default) }
    }

    /// Checks a record against those kept before it and, when unique, remembers it.
    pub fn check(&mut self, record_no: u64, key: u128, signature: Option<&Signature>) -> Verdict {
        if let Some(exact) = &self.exact {
            if let Some(&of) = exact.get(&key) {
                return Verdict::Duplicate { of };
            }
        }
        if let (Some(near), Some(sig)) = (&mut self.near, signature) {
            if let Some(of) = near.find(sig) {
                return Verdict::NearDuplicate { of };
            }
            near.insert(record_no, sig);
        }
        if let Some(exact) = &mut self.exact {
            exact.insert(key, record_no);
        }
        Verdict::Unique
    }
}

/// LSH buckets as linked lists threaded through flat vectors: one `u32` a record a band.
#[derive(Default)]
struct NearIndex {
    signatures: Vec<u32>,
    record_nos: Vec<u64>,
    heads: PrehashedMap<u64, u32>,
    next: Vec<u32>,
}

const END: u32 = u32::MAX;

/// The LSH band keys of a signature, one per band of `ROWS` rows: two records are near-duplicate
/// candidates when one of their keys (at the same band) agrees.
pub fn band_keys(sig: &Signature) -> impl Iterator<Item = u64> + '_ {
    sig.chunks_exact(ROWS).enumerate().map(|(band, rows)| {
        let mut bytes = [0u8; 4 * ROWS];
        for (dst, r) in bytes.chunks_exact_mut(4).zip(rows) {
            dst.copy_from_slice(&r.to_le_bytes());
        }
        xxh3_64_with_seed(&bytes, band as u64)
    })
}

/// Number of LSH bands (`band_keys` items).
pub const BAND_COUNT: usize = BANDS;

impl NearIndex {

    fn find(&self, sig: &Signature) -> Option<u64> {
        let mut best: Option<u32> = None;
        for (band, key) in band_keys(sig).enumerate() {
            let mut slot = self.heads.get(&key).copied().unwrap_or(END);
            while slot != END {
                let stored = &self.signatures[slot as usize * PERMUTATIONS..][..PERMUTATIONS];
                let agree = stored.iter().zip(sig).filter(|(a, b)| a == b).count();
                if agree as f64 >= NEAR_THRESHOLD * PERMUTATIONS as f64 && best.is_none_or(|b| slot < b) {
                    best = Some(slot);
                }
                slot = self.next[slot as usize * BANDS + band];
            }
        }
        best.map(|slot| self.record_nos[slot as usize])
    }

    fn insert(&mut self, record_no: u64, sig: &Signature) {
        let slot = u32::try_from(self.record_nos.len()).expect("fewer than 4 billion kept records");
        self.signatures.extend_from_slice(sig);
        self.record_nos.push(record_no);
        for key in band_keys(sig) {
            let previous = self.heads.insert(key, slot).unwrap_or(END);
            self.next.push(previous);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "The quick brown fox jumps over the lazy dog while the cat sleeps on a warm windowsill in the afternoon sun and birds sing in the old oak tree outside the kitchen window all day long";

    #[test]
    fn exact_keys_ignore_case_and_punctuation() {
        assert_eq!(exact_key("Hello, World!"), exact_key("hello world"));
        let long = "Ab-c ".repeat(300);
        assert_eq!(exact_key(&long), xxh3_128(alnum_key(&long).as_bytes()));
        assert_eq!(exact_key("Été 2"), exact_key("été, 2"));
        assert_ne!(exact_key("Hello World"), exact_key("Hello Word"));
    }

    #[test]
    fn streamed_key_is_the_hash_of_alnum_key_across_blocks() {
        // Non-ASCII characters before, at and after the 128-byte block edges, and expanding lower cases.
        let mut texts = vec![String::new(), "é".into(), "İSTANBUL ǅ ẞ".into(), "ΟΔΟΣ".repeat(70)];
        for at in [0, 1, 126, 127, 128, 129, 255, 256, 300] {
            let mut t = "Ab, c-D ".repeat(50);
            t.insert_str(at, "Ça\u{301} İ ŉ—Ω");
            texts.push(t);
        }
        for t in &texts {
            assert_eq!(exact_key(t), xxh3_128(alnum_key(t).as_bytes()), "{t}");
        }
    }

    #[test]
    fn keys_keep_accents_and_fold_final_sigma() {
        assert_ne!(exact_key("café au lait"), exact_key("cafe au lait"));
        assert_ne!(exact_key("q\u{303}uick"), exact_key("quick"), "a mark with no precomposed letter counts");
        assert_eq!(exact_key("ΟΔΟΣ ΚΑΙ ΣΟΦΙΑ"), exact_key("οδος και σοφια"));
        let h = MinHasher::new(5);
        let words = "q\u{303}uick brown fox jumps over";
        assert_ne!(h.signature(words), h.signature("q uick brown fox jumps over"), "a mark does not split a word");
    }

    #[test]
    fn exact_keeps_the_first() {
        let mut d = Deduper::new(true, false);
        assert!(matches!(d.check(0, exact_key("a b"), None), Verdict::Unique));
        assert!(matches!(d.check(5, exact_key("A, B!"), None), Verdict::Duplicate { of: 0 }));
        assert!(matches!(d.check(6, exact_key("c"), None), Verdict::Unique));
    }

    #[test]
    fn near_duplicates_found_and_unrelated_kept() {
        let h = MinHasher::new(3407);
        let mut d = Deduper::new(true, true);
        let near = BASE.replace("long", "long!") + " indeed";
        let other = "An entirely different text about gardening tools, soil, seeds, watering cans and the joys of growing tomatoes in a small urban balcony garden during summer";
        let check = |d: &mut Deduper, n: u64, s: &str| d.check(n, exact_key(s), Some(&h.signature(s)));
        assert!(matches!(check(&mut d, 0, BASE), Verdict::Unique));
        assert!(matches!(check(&mut d, 1, other), Verdict::Unique));
        assert!(matches!(check(&mut d, 2, &near), Verdict::NearDuplicate { of: 0 }));
    }

    #[test]
    fn signatures_are_seeded_and_deterministic() {
        assert_eq!(MinHasher::new(1).signature(BASE), MinHasher::new(1).signature(BASE));
        assert_ne!(MinHasher::new(1).signature(BASE), MinHasher::new(2).signature(BASE));
        assert_eq!(MinHasher::new(1).signature("").len(), PERMUTATIONS);
    }
}
