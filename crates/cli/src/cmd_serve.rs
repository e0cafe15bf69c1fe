//! `facegate serve` and `facegate apikey`.

use crate::cmd_gallery::StoreArgs;
use crate::cmd_models::ensure_installed;
use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use gallery::Role;
use server::apikeys::ApiKeys;
use server::config::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vision::detect::DetectOptions;
use vision::models::DetectorChoice;

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file (FACEGATE_* environment variables override it).
    #[arg(long, env = "FACEGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides the configuration), e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub listen: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

pub fn serve(home: &Path, s: &StoreArgs, a: ServeArgs) -> Result<i32> {
    let mut cfg = ServerConfig::load(a.config.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if a.print_config {
        print!("{}", toml::to_string_pretty(&cfg)?);
        return Ok(0);
    }
    if let (Some(c), Some(k)) = (&cfg.tls_cert, &cfg.tls_key) {
        // Checked before models load, so a bad certificate fails in a second, not after.
        server::tls::server_config(c, k)?;
    }
    let store = Arc::new(s.open(home)?);
    let engine = app::engine::EngineOptions {
        pack: cfg.pack.clone(),
        threads: cfg.threads,
        detector: if cfg.detector == "hog" {
            DetectorChoice::Hog
        } else {
            DetectorChoice::Pack
        },
        detect: DetectOptions {
            upsample: 0,
            min_face: cfg.min_face,
            max_face: cfg.max_face,
            threshold: 0.0,
        },
        liveness: cfg.pad_pack.clone(),
    };
    ensure_installed(home, None, false)?;
    let pipelines = (0..cfg.inference_slots.max(1))
        .map(|_| app::engine::load_pipeline(home, &engine).map(Arc::new))
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("loading model pack {}", cfg.pack))?;
    let keys = Arc::new(open_keys(home, s, store.clone())?);
    // Master lists are verified now: a list that does not verify stops the start.
    let chip = cfg
        .chip_trust()
        .map_err(anyhow::Error::msg)
        .context("passport chip trust")?;
    for line in &chip.loaded {
        eprintln!("chip trust: {line}");
    }
    if keys.list()?.iter().all(|k| k.revoked) {
        eprintln!(
            "note: no API key exists yet; create one with `facegate apikey create --role gate`"
        );
    }
    // Server logs: one line per request with its id, to stderr; FACEGATE_LOG (or RUST_LOG)
    // filters, default "info".
    let filter = std::env::var("FACEGATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        // The first line on stdout is the address (tests and supervisors read it).
        let scheme = if cfg.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        println!("listening on {scheme}://{}", listener.local_addr()?);
        let state = server::AppState::new(cfg, store, pipelines, keys, chip);
        server::serve(state, listener).await?;
        anyhow::Ok(())
    })?;
    Ok(0)
}

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        #[arg(long)]
        role: String,
        /// Restrict the key to these galleries (repeat; default: all).
        #[arg(long)]
        gallery: Vec<String>,
    },
    /// List keys (ids, roles, galleries; never secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

/// The API keys in the record store's access list, after moving an earlier version's per-node
/// `apikeys.db` there (said on stderr when it happens).
fn open_keys(home: &Path, s: &StoreArgs, store: Arc<gallery::Store>) -> Result<ApiKeys> {
    let data = s.data_dir(home);
    let (keys, moved) = ApiKeys::open(store, &data).context("moving apikeys.db into the store")?;
    if moved > 0 {
        eprintln!(
            "moved {moved} API key(s) from {} into the store's access list (every node now accepts them); the file was removed",
            data.join("apikeys.db").display()
        );
    }
    Ok(keys)
}

pub fn apikey(home: &Path, s: &StoreArgs, cmd: ApiKeyCommand) -> Result<i32> {
    let keys = open_keys(home, s, Arc::new(s.open(home)?))?;
    // Whoever runs this holds the master key, so acts as an admin: the audit record says so.
    // (The command's own `--role` is the new key's role.)
    let admin = || -> Result<gallery::Context> {
        let mut ctx = s.context("api key administration")?;
        ctx.role = Role::Admin;
        Ok(ctx)
    };
    match cmd {
        ApiKeyCommand::Create { role, gallery } => {
            let role = Role::parse(&role)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            let (token, key) = keys.create(
                &admin()?,
                role,
                (!gallery.is_empty()).then_some(gallery),
                now,
            )?;
            eprintln!("store this key now: it is not shown again");
            println!(
                "{}",
                serde_json::json!({"key": token, "id": key.id, "role": key.role, "galleries": key.galleries})
            );
        }
        ApiKeyCommand::List => {
            for k in keys.list()? {
                println!("{}", serde_json::to_string(&k)?);
            }
        }
        ApiKeyCommand::Revoke { id } => {
            if !keys.revoke(&admin()?, &id)? {
                bail!("no active key with id {id}");
            }
            println!("{}", serde_json::json!({"revoked": id}));
        }
    }
    Ok(0)
}
