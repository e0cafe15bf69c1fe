//! `facegate passport verify` and the chip options `facegate verify` shares.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use app::chip::{read_bounded, read_chip, ChipFiles, ChipReference, ChipTrust};
use passport::pa::Policy;

#[derive(Subcommand)]
pub enum PassportCommand {
    /// Passive authentication of chip files (ICAO Doc 9303 part 11): data-group hashes, signed
    /// attributes, signature, signer validity, chain to a CSCA, revocation — each reported.
    /// Exit code 0 accepted by the policy, 1 refused, 2 error.
    Verify(PassportVerifyArgs),
}

/// Where the chip's trust comes from and what policy applies (shared by `passport verify` and
/// `verify --dg2`).
#[derive(Args, Clone)]
pub struct TrustArgs {
    /// Directory of CSCA certificates (.der/.cer/.crt/.pem) and CRLs (.crl).
    #[arg(long, value_name = "DIR")]
    pub csca: Option<PathBuf>,
    /// ICAO master list (CMS-signed; its signature and its signer's chain are verified).
    #[arg(long, value_name = "FILE")]
    pub master_list: Vec<PathBuf>,
    /// CRL of a CSCA (DER or PEM); revocation is reported "not checked" without one.
    #[arg(long, value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// Judge validity at this date (YYYY-MM-DD) instead of now.
    #[arg(long, value_name = "DATE")]
    pub at: Option<String>,
    /// Accept a document signer certificate outside its validity.
    #[arg(long)]
    pub allow_expired_signer: bool,
    /// Accept a signer that does not chain to a given CSCA. Trusts any self-made signer:
    /// for specimens and tests only.
    #[arg(long)]
    pub no_chain: bool,
    /// Refuse unless a CRL of the signer's CSCA was checked.
    #[arg(long)]
    pub require_crl: bool,
}

impl TrustArgs {
    pub fn at(&self) -> Result<SystemTime> {
        match &self.at {
            Some(s) => passport::pa::parse_date(s).map_err(anyhow::Error::msg),
            None => Ok(SystemTime::now()),
        }
    }

    pub fn load(&self) -> Result<ChipTrust> {
        let policy = Policy {
            allow_expired_signer: self.allow_expired_signer,
            require_chain: !self.no_chain,
            require_revocation: self.require_crl,
        };
        let mls: Vec<&Path> = self.master_list.iter().map(PathBuf::as_path).collect();
        let crls: Vec<&Path> = self.crl.iter().map(PathBuf::as_path).collect();
        Ok(ChipTrust::load(
            self.csca.as_deref(),
            &mls,
            &crls,
            policy,
            self.at()?,
        )?)
    }
}

/// The chip files a command reads.
#[derive(Args)]
pub struct ChipFileArgs {
    /// EF.SOD (document security object).
    #[arg(long)]
    pub sod: PathBuf,
    /// DG2 (the face).
    #[arg(long)]
    pub dg2: PathBuf,
    /// DG1 (the MRZ): hash checked, check digits verified.
    #[arg(long)]
    pub dg1: Option<PathBuf>,
}

impl ChipFileArgs {
    pub fn read(&self) -> Result<ChipBytes> {
        ChipBytes::read(&self.sod, &self.dg2, self.dg1.as_deref())
    }
}

#[derive(Args)]
pub struct PassportVerifyArgs {
    #[command(flatten)]
    pub files: ChipFileArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Write DG2's face image(s) into this directory (face0.jp2 / face0.jpg …).
    #[arg(long, value_name = "DIR")]
    pub extract: Option<PathBuf>,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// The chip files named on the command line, read with their size limits.
pub struct ChipBytes {
    pub sod: Vec<u8>,
    pub dg2: Vec<u8>,
    pub dg1: Option<Vec<u8>>,
}

impl ChipBytes {
    pub fn read(sod: &Path, dg2: &Path, dg1: Option<&Path>) -> Result<Self> {
        Ok(ChipBytes {
            sod: read_bounded(sod, passport::sod::MAX_SOD_BYTES)?,
            dg2: read_bounded(dg2, passport::dg2::MAX_DG2_BYTES)?,
            dg1: dg1
                .map(|p| read_bounded(p, passport::mrz::MAX_DG1_BYTES))
                .transpose()?,
        })
    }

    pub fn authenticate(&self, trust: &TrustArgs) -> Result<(ChipReference, Vec<String>)> {
        let loaded = trust.load()?;
        let files = ChipFiles {
            sod: &self.sod,
            dg2: &self.dg2,
            dg1: self.dg1.as_deref(),
        };
        Ok((read_chip(&files, &loaded, trust.at()?)?, loaded.loaded))
    }
}

pub fn run(cmd: PassportCommand) -> Result<i32> {
    match cmd {
        PassportCommand::Verify(a) => verify(a),
    }
}

fn verify(a: PassportVerifyArgs) -> Result<i32> {
    let bytes = a.files.read()?;
    let (chip, loaded) = bytes.authenticate(&a.trust)?;
    if let Some(dir) = &a.extract {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let faces = passport::dg2::parse_dg2(&bytes.dg2)?;
        for (i, f) in faces.iter().enumerate() {
            let ext = match f.format {
                passport::dg2::ImageFormat::Jpeg => "jpg",
                passport::dg2::ImageFormat::Jpeg2000 => "jp2",
            };
            let path = dir.join(format!("face{i}.{ext}"));
            std::fs::write(&path, &f.image).with_context(|| path.display().to_string())?;
            eprintln!("wrote {}", path.display());
        }
    }
    if a.json {
        let mut v = chip.report_json(true);
        v["trust"] = serde_json::json!(loaded);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_summary(&chip, &loaded);
    }
    Ok(if chip.accepted() { 0 } else { 1 })
}

fn print_summary(chip: &ChipReference, loaded: &[String]) {
    let r = &chip.report;
    for l in loaded {
        println!("trust: {l}");
    }
    if let Some(m) = &chip.mrz {
        println!(
            "MRZ ({}): {} {}, {} {}, born {}, expires {}, check digits {}",
            m.format,
            m.document_code,
            m.issuing_state,
            m.primary_identifier,
            m.secondary_identifier,
            m.date_of_birth,
            m.date_of_expiry,
            if m.check_digits_ok() { "ok" } else { "WRONG" }
        );
    }
    let f = &chip.face;
    println!(
        "face: {} {:?}, declared {}x{}, {} bytes ({} in DG2)",
        f.record_format,
        f.format,
        f.width,
        f.height,
        f.image.len(),
        chip.faces_in_dg2
    );
    for d in &r.data_groups {
        println!("DG{} hash: {:?} ({})", d.data_group, d.status, d.detail);
    }
    for (name, c) in r.checks() {
        println!("{name}: {:?} ({})", c.status, c.detail);
    }
    if chip.accepted() {
        println!("accepted");
    } else {
        println!("REFUSED: {}", chip.refusals.join(", "));
    }
}

/// Refuses option combinations `verify` cannot act on.
pub fn check_reference_choice(
    reference: Option<&Path>,
    dg2: Option<&Path>,
    sod: Option<&Path>,
) -> Result<()> {
    match (reference, dg2, sod) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(()),
        (Some(_), _, _) => bail!("give either a reference image or --dg2 with --sod, not both"),
        (None, Some(_), None) => {
            bail!("--dg2 needs --sod: the chip's face is used only after passive authentication")
        }
        (None, None, _) => bail!("give a reference image, or the chip's --dg2 and --sod"),
    }
}
