//! Criterion micro-benchmarks of the pure per-tile stages, so a regression in any of them
//! shows: normalisation, blending a tile into the rolling band, the argmax / quantisation of
//! finished rows, softmax, and the test-time-augmentation permutations.
//! Run with `cargo bench --bench stages` (compare runs with `-- --save-baseline` / `--baseline`).

#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eoinfer::blend::{BandAccumulator, softmax_classes};
use eoinfer::grid::{TileGrid, Tiling, Window};
use eoinfer::normalize::{Rescale, ValueScaling, prepare_tile};
use std::hint::black_box;

const TILE: usize = 256;
const PLANE: usize = TILE * TILE;
const BANDS: usize = 6;
const CLASSES: usize = 3;

fn tile_of_dn() -> Vec<f32> {
    (0..BANDS * PLANE)
        .map(|i| 500.0 + (i % 4093) as f32 * 0.7)
        .collect()
}

fn probabilities() -> Vec<f32> {
    let mut p: Vec<f32> = (0..CLASSES * PLANE)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    softmax_classes(&mut p, CLASSES);
    p
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("per 256 px tile");
    g.throughput(Throughput::Elements(PLANE as u64));

    let raw = tile_of_dn();
    let rescale = vec![
        Rescale {
            scale: 1e-4,
            offset_dn: -1000.0,
            add: 0.0,
        };
        BANDS
    ];
    let scaling = vec![
        ValueScaling::ZScore {
            mean: 0.1,
            stddev: 0.05
        };
        BANDS
    ];
    let mut data = raw.clone();
    let mut valid = vec![false; PLANE];
    g.bench_function("normalise (6 bands)", |b| {
        b.iter(|| {
            data.copy_from_slice(&raw);
            black_box(prepare_tile(&mut data, &mut valid, &rescale, &scaling))
        });
    });

    let logits: Vec<f32> = (0..CLASSES * PLANE)
        .map(|i| ((i * 31) % 17) as f32 - 8.0)
        .collect();
    let mut work = logits.clone();
    g.bench_function("softmax (3 classes)", |b| {
        b.iter(|| {
            work.copy_from_slice(&logits);
            softmax_classes(black_box(&mut work), CLASSES);
        });
    });

    let probs = probabilities();
    let grid = TileGrid::new(4 * TILE, TILE, TILE, Tiling::Blended { overlap: 32 }).unwrap();
    let weights = grid.weights();
    let ok = vec![true; PLANE];
    let window = Window {
        x: 0,
        y: 0,
        width: TILE,
        height: TILE,
    };
    let mut acc = BandAccumulator::new(4 * TILE, TILE, CLASSES, TILE, true);
    g.bench_function("blend into the rolling band", |b| {
        b.iter(|| acc.add(black_box(window), &probs, &weights, &ok));
    });

    g.bench_function("argmax + quantise finished rows", |b| {
        b.iter_batched(
            || {
                let mut a = BandAccumulator::new(TILE, TILE, CLASSES, TILE, true);
                a.add(window, &probs, &weights, &ok);
                a
            },
            |mut a| black_box(a.flush_until(TILE)),
            criterion::BatchSize::LargeInput,
        );
    });

    let mut turned = vec![0.0_f32; BANDS * PLANE];
    let mut back = vec![0.0_f32; CLASSES * PLANE];
    g.bench_function("TTA: transpose + flip a tile and map back", |b| {
        b.iter(|| {
            eoinfer::tta::transform_planes(7, &raw, &mut turned, TILE);
            eoinfer::tta::accumulate_inverse(7, &probs, &mut back, TILE);
            black_box(back[0])
        });
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
