//! CPU and size of gzip for OTLP/HTTP bodies: the realistic span batches of
//! `testing::tango_batch`, encoded by the crate's own encoder, compressed whole by each
//! candidate. Run: `cargo bench -p tracer-export --features testing --bench gzip`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "a bench"
)]

use std::{hint::black_box, time::Instant};

use tracer_export::{otlp_encode::Encoder, testing::tango_batch};

/// What each candidate keeps between bodies, as the sender does.
enum Candidate {
    /// flate2 with zlib-rs at `Compression::fast()` (deflate_quick), gzip framing by hand.
    ZlibRs(flate2::Compress),
    /// libdeflate at a level.
    Libdeflate(libdeflater::Compressor),
}

impl Candidate {
    fn gzip(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match self {
            Candidate::ZlibRs(deflate) => {
                deflate.reset();
                out.reserve(raw.len() / 4 + 18);
                out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
                let mut flush = flate2::FlushCompress::None;
                let mut consumed = 0;
                loop {
                    let before = deflate.total_in();
                    let status = deflate.compress_vec(&raw[consumed..], out, flush).unwrap();
                    consumed += (deflate.total_in() - before) as usize;
                    match status {
                        flate2::Status::StreamEnd => break,
                        _ if consumed >= raw.len() => flush = flate2::FlushCompress::Finish,
                        _ => {}
                    }
                    if out.len() == out.capacity() || status == flate2::Status::BufError {
                        out.reserve(out.capacity().max(4096));
                    }
                }
                let mut crc = flate2::Crc::new();
                crc.update(raw);
                out.extend_from_slice(&crc.sum().to_le_bytes());
                out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            }
            Candidate::Libdeflate(compressor) => {
                out.resize(compressor.gzip_compress_bound(raw.len()), 0);
                let len = compressor.gzip_compress(raw, out).unwrap();
                out.truncate(len);
            }
        }
    }
}

fn main() {
    let libdeflate = |level| {
        Candidate::Libdeflate(libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap()))
    };
    // Each kept across bodies, as the sender keeps its compressor.
    let mut candidates = [
        (
            "flate2/zlib-rs fast (today)",
            Candidate::ZlibRs(flate2::Compress::new(flate2::Compression::fast(), false)),
        ),
        (
            "flate2/zlib-rs level 2",
            Candidate::ZlibRs(flate2::Compress::new(flate2::Compression::new(2), false)),
        ),
        ("libdeflate level 1", libdeflate(1)),
        ("libdeflate level 2", libdeflate(2)),
        ("libdeflate level 3", libdeflate(3)),
    ];
    for spans in [256, 1024, 2048] {
        let mut raw = Vec::new();
        Encoder::default().encode(&tango_batch(spans), &mut raw);
        let kib = raw.len() as f64 / 1024.0;
        println!("{spans} spans, {kib:.0} KiB raw");
        // About 2 GiB of input per candidate: long enough to steady the figures.
        let iterations = ((2u64 << 30) / raw.len() as u64).clamp(20, 20_000);
        for (name, candidate) in &mut candidates {
            let mut out = Vec::new();
            candidate.gzip(&raw, &mut out);
            let mut decoded = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(out.as_slice()), &mut decoded)
                .unwrap();
            assert_eq!(decoded, raw, "{name}");
            let size = out.len();
            let start = Instant::now();
            for _ in 0..iterations {
                candidate.gzip(black_box(&raw), &mut out);
                black_box(&out);
            }
            let ns = start.elapsed().as_nanos() as f64 / iterations as f64;
            println!(
                "  {name:<28} {:>7.0} ns/KiB  {:>6.0} µs/body  ratio {:.2}  {size} bytes",
                ns / kib,
                ns / 1000.0,
                raw.len() as f64 / size as f64
            );
        }
    }
}
