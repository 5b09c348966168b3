//! Times layer compression of an incompressible tar (like scripts/bench.sh's 180 MB context):
//! `cargo run --release -p exporter --example compress_bench [MB]`.

use std::io::{Read, Write};
use std::time::Instant;

use exporter::{Compression, CompressionKind, ContentStore};

fn main() {
    let megabytes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(180);
    let dir = tempfile::tempdir().unwrap();
    let content = ContentStore::open(dir.path()).unwrap();
    // 9000-byte random files in a tar, as bench.sh's context.
    let tar_path = dir.path().join("layer.tar");
    {
        let mut builder = tar::Builder::new(std::io::BufWriter::new(
            std::fs::File::create(&tar_path).unwrap(),
        ));
        let mut random = std::fs::File::open("/dev/urandom").unwrap();
        let mut data = vec![0u8; 9000];
        for i in 0..megabytes * 1_000_000 / 9000 {
            random.read_exact(&mut data).unwrap();
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("src/f{i}.bin"), &data[..])
                .unwrap();
        }
        builder.into_inner().unwrap().flush().unwrap();
    }
    let size = std::fs::metadata(&tar_path).unwrap().len();
    println!(
        "layer tar: {:.0} MB, {} rayon threads",
        size as f64 / 1e6,
        rayon::current_num_threads()
    );
    let copy_tar = |out: &mut dyn Write| -> std::io::Result<()> {
        std::io::copy(&mut std::fs::File::open(&tar_path)?, out)?;
        Ok(())
    };

    // Before: one flate2 (zlib-rs) gzip stream on one core.
    let start = (Instant::now(), cpu_seconds());
    let mut gz = flate2::write::GzEncoder::new(std::io::sink(), flate2::Compression::default());
    copy_tar(&mut gz).unwrap();
    gz.finish().unwrap();
    report("gzip single-stream (before)", size, start);

    for (kind, level) in [
        (CompressionKind::Gzip, None),
        (CompressionKind::Gzip, Some(1)),
        (CompressionKind::Zstd, None),
        (CompressionKind::Uncompressed, None),
    ] {
        let compression = Compression {
            kind,
            level,
            ..Default::default()
        };
        let start = (Instant::now(), cpu_seconds());
        let blob =
            exporter::write_layer_with(&content, &compression, &mut |out| copy_tar(out)).unwrap();
        report(
            &format!(
                "{kind} (level {}) write_layer (with both sha256s and the store write)",
                level.map_or("default".to_string(), |l| l.to_string())
            ),
            size,
            start,
        );
        println!("    blob {} bytes", blob.descriptor.size);
    }
}

/// Process CPU time (user + system, all threads) in seconds, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn report(what: &str, size: u64, start: (Instant, f64)) {
    let seconds = start.0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - start.1;
    println!(
        "{what}: {:.2} s wall, {:.0} MB/s; {:.2} s CPU, {:.0} MB per CPU-second",
        seconds,
        size as f64 / 1e6 / seconds,
        cpu,
        size as f64 / 1e6 / cpu
    );
}
