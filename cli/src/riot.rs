//! `hsm-provision riot`: DICE devices, development roots and verification certificates.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use hsm_core::X509Attestation as _;

use crate::drivers::{DEFAULT_ROOT_CN, RiotSpec, RootSpec, SeedSource, dev_root};
use crate::util::{self, Secret};
use crate::{EXIT_CODES, Error};

/// `riot`'s subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RiotCommand {
    /// Derive a DICE device's DeviceID and Alias certificates and write them as PEM.
    #[command(
        long_about = "Derive a DICE device (hsm-riot, standard profile) from its UDS, RIoT Core \
measurement and firmware id, and write its certificates as PEM to --out-dir: alias.pem, \
deviceid.pem, root.pem (when a root issued the DeviceID certificate) and chain.pem (all of them, \
Alias first). Prints the registration id (the Alias certificate's CN). The same inputs always \
give the same keys and byte-identical certificates; private keys are never written.",
        after_help = EXIT_CODES
    )]
    Device(DeviceArgs),
    /// Make a development root CA from a seed and write its certificate.
    #[command(
        long_about = "Make a development root CA whose key is derived from a seed, and write its \
certificate (PEM). The same seed and common name give the same root, so the root can be enrolled \
in DPS as a CA group once and used to issue DeviceID certificates later. With --new-seed, a fresh \
random seed is written to a new file (mode 0600) first. For development only: production roots \
live in an HSM.",
        after_help = EXIT_CODES
    )]
    Root(RootArgs),
    /// Sign a DPS verification-code certificate with a development root.
    #[command(
        name = "verify-cert",
        long_about = "Sign the proof-of-possession certificate DPS asks for after a CA \
certificate is uploaded: subject CN = the verification code DPS shows, issued by the development \
root the seed gives. Upload the output to DPS to verify the root.",
        after_help = EXIT_CODES
    )]
    VerifyCert(VerifyCertArgs),
}

/// A root seed: hex or a file.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
struct RootSeedArgs {
    /// The development root's seed, in hex.
    #[arg(long, value_name = "HEX")]
    root_seed_hex: Option<Secret>,
    /// A file holding the root seed (hex text or raw bytes).
    #[arg(long, value_name = "FILE")]
    root_seed_file: Option<PathBuf>,
}

impl RootSeedArgs {
    fn source(&self) -> Option<SeedSource> {
        match (&self.root_seed_hex, &self.root_seed_file) {
            (Some(hex), _) => Some(SeedSource::Hex(hex.clone())),
            (None, Some(path)) => Some(SeedSource::File(path.clone())),
            (None, None) => None,
        }
    }
}

/// `riot device`.
#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    /// The unique device secret, 32 bytes in hex.
    #[arg(
        long,
        value_name = "HEX",
        required_unless_present = "uds_file",
        conflicts_with = "uds_file"
    )]
    uds_hex: Option<Secret>,
    /// A file holding the UDS (hex text or 32 raw bytes).
    #[arg(long, value_name = "FILE")]
    uds_file: Option<PathBuf>,
    /// The RIoT Core measurement, 32 bytes in hex [default: 32 zero bytes].
    #[arg(long, value_name = "HEX")]
    measurement_hex: Option<String>,
    /// The firmware id (FWID), SHA-256 in hex.
    #[arg(long, value_name = "HEX")]
    fwid_hex: String,
    #[command(flatten)]
    root_seed: RootSeedArgs,
    /// The root's common name (must match the enrolled root) [default: riot-root].
    #[arg(long, value_name = "CN")]
    root_cn: Option<String>,
    /// A CA certificate (PEM) to issue the DeviceID certificate instead of a seed's root.
    #[arg(long, value_name = "FILE", requires = "root_key", conflicts_with_all = ["root_seed_hex", "root_seed_file"])]
    root_cert: Option<PathBuf>,
    /// The CA's private key (PEM or DER), with --root-cert.
    #[arg(long, value_name = "FILE", requires = "root_cert")]
    root_key: Option<PathBuf>,
    /// The Alias certificate's CN, which is the registration id [default: riot-device-cert].
    #[arg(long, value_name = "ID")]
    registration_id: Option<String>,
    /// Where to write the certificates (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

/// `riot root`.
#[derive(Debug, Args)]
pub(crate) struct RootArgs {
    /// The seed, in hex.
    #[arg(long, value_name = "HEX", required_unless_present_any = ["seed_file", "new_seed"], conflicts_with_all = ["seed_file", "new_seed"])]
    seed_hex: Option<Secret>,
    /// A file holding the seed (hex text or raw bytes).
    #[arg(long, value_name = "FILE", conflicts_with = "new_seed")]
    seed_file: Option<PathBuf>,
    /// Make a random 32-byte seed and write it (hex) to this new file, readable only by you.
    #[arg(long, value_name = "FILE")]
    new_seed: Option<PathBuf>,
    /// The root's common name [default: riot-root].
    #[arg(long, value_name = "CN")]
    cn: Option<String>,
    /// Where to write the root certificate (PEM).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// `riot verify-cert`.
#[derive(Debug, Args)]
pub(crate) struct VerifyCertArgs {
    #[command(flatten)]
    root_seed: RootSeedArgs,
    /// The root's common name [default: riot-root].
    #[arg(long, value_name = "CN")]
    root_cn: Option<String>,
    /// The verification code DPS shows.
    #[arg(long, value_name = "CODE")]
    code: String,
    /// Where to write the verification certificate (PEM).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Runs a `riot` subcommand.
pub(crate) fn run(command: &RiotCommand) -> Result<(), Error> {
    match command {
        RiotCommand::Device(args) => device(args),
        RiotCommand::Root(args) => root(args),
        RiotCommand::VerifyCert(args) => verify_cert(args),
    }
}

fn common_name(cn: Option<&String>) -> String {
    cn.cloned().unwrap_or_else(|| DEFAULT_ROOT_CN.to_owned())
}

fn device(args: &DeviceArgs) -> Result<(), Error> {
    let uds = match (&args.uds_hex, &args.uds_file) {
        (Some(hex), _) => SeedSource::Hex(hex.clone()),
        (None, Some(path)) => SeedSource::File(path.clone()),
        (None, None) => return Err(Error::usage("give --uds-hex or --uds-file")),
    };
    let root = match (args.root_seed.source(), &args.root_cert, &args.root_key) {
        (Some(seed), _, _) => RootSpec::Seed {
            seed,
            common_name: common_name(args.root_cn.as_ref()),
        },
        (None, Some(cert), Some(key)) => RootSpec::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => RootSpec::SelfSigned,
    };
    let spec = RiotSpec {
        uds,
        measurement: args.measurement_hex.clone(),
        fwid: args.fwid_hex.clone(),
        root,
        registration_id: args.registration_id.clone(),
    };
    let identity = spec.build()?;
    let chain = identity.certificate_chain();
    std::fs::create_dir_all(&args.out_dir).map_err(|source| Error::Write {
        path: args.out_dir.clone(),
        source,
    })?;
    let names = ["alias.pem", "deviceid.pem", "root.pem"];
    let what = ["Alias", "DeviceID", "root"];
    println!("registration id: {}", identity.registration_id());
    for ((certificate, name), what) in chain.iter().zip(names).zip(what) {
        let path = args.out_dir.join(name);
        util::write(&path, util::pem("CERTIFICATE", certificate).as_bytes())?;
        println!("wrote {} ({what} certificate)", path.display());
    }
    let path = args.out_dir.join("chain.pem");
    util::write(&path, util::chain_pem(chain).as_bytes())?;
    println!(
        "wrote {} (the chain, Alias first, {} certificates)",
        path.display(),
        chain.len()
    );
    Ok(())
}

fn root(args: &RootArgs) -> Result<(), Error> {
    let seed = match (&args.seed_hex, &args.seed_file, &args.new_seed) {
        (Some(hex), _, _) => SeedSource::Hex(hex.clone()),
        (None, Some(path), _) => SeedSource::File(path.clone()),
        (None, None, Some(path)) => {
            let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(bytes.as_mut_slice()).map_err(|e| {
                Error::usage(format!("the system's random number generator failed: {e}"))
            })?;
            let hex = zeroize::Zeroizing::new(util::hex_encode(bytes.as_slice()) + "\n");
            util::write_secret(path, hex.as_bytes())?;
            eprintln!(
                "wrote a new random seed to {} (keep it secret)",
                path.display()
            );
            SeedSource::File(path.clone())
        }
        (None, None, None) => {
            return Err(Error::usage("give --seed-hex, --seed-file or --new-seed"));
        }
    };
    let root = dev_root(&seed, &common_name(args.cn.as_ref()))?;
    util::write(
        &args.out,
        util::pem("CERTIFICATE", root.certificate()).as_bytes(),
    )?;
    println!(
        "wrote {} (development root '{}')",
        args.out.display(),
        common_name(args.cn.as_ref())
    );
    Ok(())
}

fn verify_cert(args: &VerifyCertArgs) -> Result<(), Error> {
    let seed = args
        .root_seed
        .source()
        .ok_or_else(|| Error::usage("give --root-seed-hex or --root-seed-file"))?;
    let root = dev_root(&seed, &common_name(args.root_cn.as_ref()))?;
    let certificate = root
        .verification_certificate(&args.code)
        .map_err(|source| Error::Riot {
            operation: "cannot make the verification certificate",
            source,
        })?;
    util::write(&args.out, util::pem("CERTIFICATE", &certificate).as_bytes())?;
    println!(
        "wrote {} (CN {}, signed by '{}')",
        args.out.display(),
        args.code,
        common_name(args.root_cn.as_ref())
    );
    Ok(())
}
