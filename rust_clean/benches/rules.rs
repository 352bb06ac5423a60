//! The hot rules on generated descriptions (no data files): `cargo bench -p rust_clean`.
//!
//! One bench a rule as `stats.json` `rule_seconds` names them (`text`, `unescape`, `kinds`, `dedup`), each over
//! the same seeded batch, so a change to a rule shows up here before it shows up in a full run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rust_clean::dedup::{exact_key, Deduper, MinHasher, Verdict};
use rust_clean::kinds::classify;
use rust_clean::text::{clean_text, Changes};
use rust_clean::unescape::unescape;

const WORDS: [&str; 24] = [
    "the", "story", "of", "a", "young", "girl", "who", "finds", "her", "way", "home", "through", "winter", "Paperback",
    "&amp;", "&#8217;s", "<b>bold</b>", "caf\u{e9}", "&quot;Gripping.&quot;", "--Sunday", "Times", "author", "lives",
    "in",
];

/// `n` descriptions of 20 to 120 words drawn from `WORDS` (entities, tags, quotes and plain words) by a seeded
/// xorshift, with one in eight repeated so that dedup finds duplicates.
fn descriptions(n: usize) -> Vec<String> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    let mut out: Vec<String> = Vec::with_capacity(n);
    for i in 0..n {
        if i % 8 == 7 {
            out.push(out[next(i)].clone());
            continue;
        }
        let words: Vec<&str> = (0..20 + next(100)).map(|_| WORDS[next(WORDS.len())]).collect();
        out.push(words.join(" "));
    }
    out
}

fn rules(c: &mut Criterion) {
    let raw = descriptions(2_000);
    let cleaned: Vec<String> = raw.iter().map(|d| clean_text(d, &mut Changes::default())).collect();
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Bytes(raw.iter().map(|d| d.len() as u64).sum()));
    group.bench_function("text", |b| b.iter(|| raw.iter().map(|d| clean_text(black_box(d), &mut Changes::default()).len()).sum::<usize>()));
    group.bench_function("unescape", |b| b.iter(|| raw.iter().map(|d| unescape(black_box(d)).text.len()).sum::<usize>()));
    group.bench_function("kinds", |b| b.iter(|| cleaned.iter().map(|d| classify(black_box(d)) as usize).sum::<usize>()));
    group.bench_function("dedup_exact", |b| {
        b.iter_batched(
            || Deduper::new(true, false),
            |mut seen| cleaned.iter().zip(0..).map(|(d, i)| seen.check(i, exact_key(d), None)).filter(|v| !matches!(v, Verdict::Unique)).count(),
            BatchSize::SmallInput,
        )
    });
    let hasher = MinHasher::new(3407);
    group.bench_function("dedup_near", |b| {
        b.iter_batched(
            || Deduper::new(true, true),
            |mut seen| {
                let verdicts = cleaned.iter().zip(0..).map(|(d, i)| seen.check(i, exact_key(d), Some(&hasher.signature(d))));
                verdicts.filter(|v| !matches!(v, Verdict::Unique)).count()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, rules);
criterion_main!(benches);
