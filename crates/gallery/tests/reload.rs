//! A gallery that must be loaded whole again (its index layout changed) is loaded once, however
//! many searches arrive at once: each would otherwise build its own copy, and hold two or more
//! copies of the gallery in memory meanwhile.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use gallery::crypto;
use gallery::{IndexChoice, Metric};

mod common;
use common::*;

#[test]
fn concurrent_searches_that_need_a_reload_share_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, c) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let writer = open(dir.path(), &key, c.clone());
    writer.create_gallery(&admin(), "rt", &policy(30)).unwrap();
    let people = identities(11, 40_000, 128);
    let items: Vec<(String, Vec<Vec<f32>>)> = people
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("P{i:07}"), vec![p.clone()]))
        .collect();
    for chunk in items.chunks(10_000) {
        writer
            .enrol_batch(&admin(), "rt", chunk, Metric::Euclidean, "test")
            .unwrap();
    }
    // Another process has the gallery loaded; the writer changes its index layout, which no
    // recorded change describes: the other must load it whole again.
    let searcher = open(dir.path(), &key, c);
    searcher.preload("rt").unwrap();
    assert_eq!(searcher.load_stats().0, 1);
    let mut compact = policy(30);
    compact.index = IndexChoice::Compact;
    writer
        .update_policy(&admin(), "rt", &compact, None)
        .unwrap();
    let start = std::sync::Barrier::new(4);
    std::thread::scope(|sc| {
        for t in 0..4 {
            let (searcher, start, people) = (&searcher, &start, &people);
            sc.spawn(move || {
                start.wait();
                let r = searcher
                    .identify(&gate(), "rt", &sample(&people[t * 7], 1), None, 0.6)
                    .unwrap();
                assert_eq!(r.candidates[0].reference, format!("P{:07}", t * 7));
            });
        }
    });
    assert_eq!(
        searcher.load_stats().0,
        2,
        "four searches that found the index out of date loaded the gallery once between them"
    );
}
