//! `hsm-provision riot`: DICE devices, development roots and verification certificates.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use hsm_core::X509Attestation as _;

use hsm_core::SecretBytes;

use crate::device::riot::{
    DEFAULT_ROOT_CN, RiotArgs, SECRET_LEN, dev_root, dev_root_from, secret_bytes,
};
use crate::device::secret::SecretSource;
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
    Device(Box<DeviceArgs>),
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
    fn source(&self) -> Option<SecretSource> {
        match (&self.root_seed_hex, &self.root_seed_file) {
            (Some(hex), _) => Some(SecretSource::Value(hex.clone())),
            (None, Some(path)) => Some(SecretSource::File(path.clone())),
            (None, None) => None,
        }
    }
}

/// `riot device`: the same DICE flags as `register` (here also without their `riot-` prefix).
#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    riot: RiotArgs,
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
    let identity = args
        .riot
        .build_noting(args.registration_id.as_deref(), &mut |note| {
            eprintln!("{note}")
        })?;
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
    let cn = args.cn.as_deref();
    let (root, new_seed) = match (&args.seed_hex, &args.seed_file, &args.new_seed) {
        (Some(hex), _, _) => (dev_root(&SecretSource::Value(hex.clone()), cn)?, None),
        (None, Some(path), _) => {
            let (seed, format) = secret_bytes("root seed", &SecretSource::File(path.clone()))?;
            eprintln!("read the root seed from {} ({format})", path.display());
            (dev_root_from(&seed, cn)?, None)
        }
        (None, None, Some(path)) => {
            let mut bytes = zeroize::Zeroizing::new([0u8; SECRET_LEN]);
            getrandom::fill(bytes.as_mut_slice()).map_err(|e| {
                Error::usage(format!("the system's random number generator failed: {e}"))
            })?;
            let root = dev_root_from(&SecretBytes::copy_from(bytes.as_slice()), cn)?;
            let hex = zeroize::Zeroizing::new(util::hex_encode(bytes.as_slice()) + "\n");
            (root, Some((path, hex)))
        }
        (None, None, None) => {
            return Err(Error::usage("give --seed-hex, --seed-file or --new-seed"));
        }
    };
    // Nothing is written until both files can be: the certificate waits next to its place
    // while the new seed is written (a fresh file, never an existing one).
    let staged = util::stage(
        &args.out,
        util::pem("CERTIFICATE", root.certificate()).as_bytes(),
    )?;
    if let Some((path, hex)) = &new_seed {
        util::write_secret(path, hex.as_bytes())?;
    }
    if let Err(e) = staged.commit() {
        if let Some((path, _)) = &new_seed {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    if let Some((path, _)) = &new_seed {
        eprintln!(
            "wrote a new random seed to {} (keep it secret)",
            path.display()
        );
    }
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
    let (bytes, format) = secret_bytes("root seed", &seed)?;
    if let SecretSource::File(path) = &seed {
        eprintln!("read the root seed from {} ({format})", path.display());
    }
    let root = dev_root_from(&bytes, args.root_cn.as_deref())?;
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
