//! The `facegate` binary: CLI front end over the vision (and later gallery/server) crates.

#![forbid(unsafe_code)]

mod cmd_bench;
mod cmd_bench_gallery;
mod cmd_bench_passport;
mod cmd_bench_search;
mod cmd_faces;
mod cmd_gallery;
mod cmd_liveness;
mod cmd_models;
mod cmd_passport;
mod cmd_serve;
mod cmd_watch;
mod engine;
mod eval;
mod machine;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "facegate",
    version,
    about = "Private-by-construction face recognition for border control"
)]
struct Cli {
    /// Where models and the runtime live (default: $FACEGATE_HOME or ~/.local/share/facegate).
    #[arg(long, global = true, env = "FACEGATE_HOME")]
    home: Option<PathBuf>,
    #[command(flatten)]
    store: cmd_gallery::StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, list and check model packs.
    Models {
        #[command(subcommand)]
        command: cmd_models::ModelsCommand,
    },
    /// Detect faces and print one JSON line per image with boxes, landmarks and embeddings.
    Embed(cmd_faces::EmbedArgs),
    /// Detect faces and print boxes, landmarks and quality hints (no embeddings).
    Detect(cmd_faces::EmbedArgs),
    /// 1:1 verification of a probe against a reference. Exit code 0 match, 1 no match, 2 error.
    Verify(cmd_faces::VerifyArgs),
    /// Passport chips: passive authentication of EF.SOD / DG1 / DG2 (ICAO Doc 9303 part 11).
    Passport {
        #[command(subcommand)]
        command: cmd_passport::PassportCommand,
    },
    /// Presentation attack detection (liveness) on live captures: per face, each PAD model's
    /// score, the fused score, the threshold and the decision. Exit code 0 all live, 1 an attack
    /// or no face, 2 error.
    Liveness(cmd_liveness::LivenessArgs),
    /// Per-stage speed of the 1:1 pipeline on one image.
    Bench(cmd_bench::BenchArgs),
    /// Create, list, show, purge and rekey galleries.
    Gallery {
        #[command(subcommand)]
        command: cmd_gallery::GalleryCommand,
    },
    /// Enrol subjects (images, a batch directory or CSV, or precomputed templates).
    #[command(alias = "enroll")]
    Enrol(cmd_gallery::EnrolArgs),
    /// 1:N search of a gallery. Exit code 0 candidates found, 1 no match, 2 error.
    Identify(cmd_gallery::IdentifyArgs),
    /// Erase a subject (key destruction) and print the signed receipt.
    Delete(cmd_gallery::DeleteArgs),
    /// What the gallery holds about one subject (no biometric data).
    Subject(cmd_gallery::SubjectArgs),
    /// Verify, export or anchor the audit log.
    Audit {
        #[command(subcommand)]
        command: cmd_gallery::AuditCommand,
    },
    /// Follow faces through a video (MP4/H.264 or a folder of frames) and decide once per
    /// passer-by, against a reference image (e-gate) or a gallery (watchlist). JSON Lines.
    Watch(cmd_watch::WatchArgs),
    /// Serve the HTTP API (see crates/server/openapi.json).
    Serve(cmd_serve::ServeArgs),
    /// Create, list and revoke API keys for the server.
    Apikey {
        #[command(subcommand)]
        command: cmd_serve::ApiKeyCommand,
    },
    /// Master key operations.
    /// Move a deployment between the embedded store (a data directory) and PostgreSQL, either
    /// way: sealed rows, keys and the audit chain copied as they are and verified on the target
    /// (needs --role admin and the master key).
    Migrate(cmd_gallery::MigrateArgs),
    Keys {
        #[command(subcommand)]
        command: cmd_gallery::KeysCommand,
    },
    /// Exact 1:N search speed on raw f32 vector files (the FAISS side-by-side uses it).
    BenchSearch(cmd_bench_search::BenchSearchArgs),
    /// Cost of the encrypted store: bulk enrolment, start-up decryption, identify latency.
    BenchGallery(cmd_bench_gallery::BenchGalleryArgs),
    /// Cost of reading a passport chip: parsing and passive authentication on one core, and the
    /// JPEG 2000 face's decoding beside OpenJPEG.
    BenchPassport(cmd_bench_passport::BenchPassportArgs),
    /// Accuracy evaluation on labelled data.
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
}

fn main() {
    // Rust ignores SIGPIPE, so `facegate ... | head` would panic on the next print. Treat a
    // closed stdout as the reader being done: exit quietly with the conventional status.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    let home = cli.home.unwrap_or_else(vision::pack::default_home);
    match cli.command {
        Command::Models { command } => cmd_models::run(&home, command),
        Command::Embed(a) => cmd_faces::embed(&home, a),
        Command::Detect(a) => cmd_faces::detect(&home, a),
        Command::Verify(a) => cmd_faces::verify(&home, a),
        Command::Liveness(a) => cmd_liveness::run(&home, a),
        Command::Passport { command } => cmd_passport::run(command),
        Command::Bench(a) => cmd_bench::run(&home, a),
        Command::BenchSearch(a) => cmd_bench_search::run(a),
        Command::BenchGallery(a) => cmd_bench_gallery::run(a),
        Command::BenchPassport(a) => cmd_bench_passport::run(a),
        Command::Eval { command } => eval::run(&home, &cli.store, command),
        Command::Gallery { command } => cmd_gallery::gallery(&home, &cli.store, command),
        Command::Enrol(a) => cmd_gallery::enrol(&home, &cli.store, a),
        Command::Identify(a) => cmd_gallery::identify(&home, &cli.store, a),
        Command::Delete(a) => cmd_gallery::delete(&home, &cli.store, a),
        Command::Subject(a) => cmd_gallery::subject(&home, &cli.store, a),
        Command::Audit { command } => cmd_gallery::audit(&home, &cli.store, command),
        Command::Keys { command } => cmd_gallery::keys(&home, &cli.store, command),
        Command::Migrate(a) => cmd_gallery::migrate(&home, &cli.store, a),
        Command::Watch(a) => cmd_watch::watch(&home, &cli.store, a),
        Command::Serve(a) => cmd_serve::serve(&home, &cli.store, a),
        Command::Apikey { command } => cmd_serve::apikey(&home, &cli.store, command),
    }
}
