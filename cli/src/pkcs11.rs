//! `hsm-provision pkcs11`: tokens, objects, key generation, CSRs and certificates on a token.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use hsm_core::KeyHandle as _;
use hsm_pkcs11::{KeySpec, Module, Pkcs11Key};

use crate::device::pkcs11::{Pkcs11Options, open_token, parse_uri};
use crate::util;
use crate::{EXIT_CODES, Error};

const URI_HELP: &str = "Objects are named by RFC 7512 URIs, e.g. \
'pkcs11:token=dev;object=device-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin'. \
The PIN comes from --pin-file, else the URI's pin-value or pin-source, else $PKCS11_PIN.";

/// `pkcs11`'s subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Pkcs11Command {
    /// List the tokens a PKCS#11 module offers.
    #[command(after_help = EXIT_CODES)]
    Tokens(TokensArgs),
    /// List the objects on a token (keys, certificates, secret keys).
    #[command(long_about = format!("List the objects on the token a URI names (keys, certificates, secret keys), with their URIs.\n\n{URI_HELP}"), after_help = EXIT_CODES)]
    Objects(ObjectsArgs),
    /// Generate a key pair on a token (sensitive, not extractable).
    #[command(long_about = format!("Generate a key pair on the token, with the URI's object label and id: the private key CKA_SENSITIVE, not CKA_EXTRACTABLE, usable only to sign. Prints the public key (PEM).\n\n{URI_HELP}"), after_help = EXIT_CODES)]
    Generate(GenerateArgs),
    /// Make a PKCS#10 CSR signed by a key on a token.
    #[command(long_about = format!("Make a PKCS#10 certificate signing request for the key the URI names, signed on the token, with the given common name (for DPS, the registration id).\n\n{URI_HELP}"), after_help = EXIT_CODES)]
    Csr(CsrArgs),
    /// Store a certificate on a token next to its key.
    #[command(name = "import-cert", long_about = format!("Store a certificate (PEM or DER) on the token with the URI's object label and id (normally the key's), so that --pkcs11 registration finds the key and its certificate together. With --chain, the further certificates in the file are stored too (labels '<label>-chain1', ...).\n\n{URI_HELP}"), after_help = EXIT_CODES)]
    ImportCert(ImportCertArgs),
}

/// `pkcs11 tokens`.
#[derive(Debug, Args)]
pub(crate) struct TokensArgs {
    /// The PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, value_name = "PATH")]
    module: PathBuf,
}

/// `pkcs11 objects`.
#[derive(Debug, Args)]
pub(crate) struct ObjectsArgs {
    /// The token's URI.
    uri: String,
    #[command(flatten)]
    token: Pkcs11Options,
}

/// Key pair algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Algorithm {
    /// ECDSA on P-256.
    P256,
    /// ECDSA on P-384.
    P384,
    /// RSA 2048.
    Rsa2048,
    /// RSA 3072.
    Rsa3072,
}

/// `pkcs11 generate`.
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// The new key's URI (token, and object= and/or id=).
    uri: String,
    /// The key pair's algorithm.
    #[arg(long, value_enum, default_value = "p256")]
    algorithm: Algorithm,
    #[command(flatten)]
    token: Pkcs11Options,
}

/// `pkcs11 csr`.
#[derive(Debug, Args)]
pub(crate) struct CsrArgs {
    /// The key's URI.
    uri: String,
    /// The subject's common name (for DPS, the registration id).
    #[arg(long, value_name = "NAME")]
    cn: String,
    /// Where to write the CSR (PEM) [default: stdout].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    token: Pkcs11Options,
}

/// `pkcs11 import-cert`.
#[derive(Debug, Args)]
pub(crate) struct ImportCertArgs {
    /// The URI to store the certificate under (the key's label and id).
    uri: String,
    /// The certificate (PEM or DER; the first one is the key's).
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// Also store the file's further certificates (the chain).
    #[arg(long)]
    chain: bool,
    #[command(flatten)]
    token: Pkcs11Options,
}

/// Runs a `pkcs11` subcommand.
pub(crate) fn run(command: &Pkcs11Command) -> Result<(), Error> {
    match command {
        Pkcs11Command::Tokens(args) => tokens(args),
        Pkcs11Command::Objects(args) => objects(args),
        Pkcs11Command::Generate(args) => generate(args),
        Pkcs11Command::Csr(args) => csr(args),
        Pkcs11Command::ImportCert(args) => import_cert(args),
    }
}

fn failed(operation: &'static str) -> impl FnOnce(hsm_pkcs11::Error) -> Error {
    move |source| Error::Pkcs11 { operation, source }
}

fn tokens(args: &TokensArgs) -> Result<(), Error> {
    let module = Module::load(&args.module).map_err(failed("cannot load the PKCS#11 module"))?;
    let tokens = module.tokens().map_err(failed("cannot list the tokens"))?;
    if tokens.is_empty() {
        println!("no tokens in {}", args.module.display());
    }
    for token in tokens {
        let flags = [
            (!token.initialized).then_some("not initialised"),
            token.login_required.then_some("login required"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        println!(
            "slot {:<12} token '{}'  manufacturer '{}'  model '{}'  serial '{}'{}",
            token.slot.id(),
            token.label,
            token.manufacturer,
            token.model,
            token.serial,
            if flags.is_empty() {
                String::new()
            } else {
                format!("  ({flags})")
            }
        );
    }
    Ok(())
}

fn objects(args: &ObjectsArgs) -> Result<(), Error> {
    let uri = parse_uri(&args.uri)?;
    let token = open_token(&uri, &args.token)?;
    let objects = token
        .list_objects()
        .map_err(failed("cannot list the objects"))?;
    if objects.is_empty() {
        println!("no objects on token '{}'", token.label());
    }
    for object in objects {
        println!(
            "{:<10} label '{}'  id {}  {}",
            object.class,
            object.label,
            if object.id.is_empty() {
                "-".to_owned()
            } else {
                util::hex_encode(&object.id)
            },
            object.uri
        );
    }
    Ok(())
}

fn generate(args: &GenerateArgs) -> Result<(), Error> {
    let uri = parse_uri(&args.uri)?;
    let token = open_token(&uri, &args.token)?;
    let spec = match args.algorithm {
        Algorithm::P256 => KeySpec::EcdsaP256,
        Algorithm::P384 => KeySpec::EcdsaP384,
        Algorithm::Rsa2048 => KeySpec::Rsa2048,
        Algorithm::Rsa3072 => KeySpec::Rsa3072,
    };
    let key = token
        .generate_key_pair(&uri, spec)
        .map_err(failed("cannot generate the key pair"))?;
    eprintln!(
        "generated a {} key pair on token '{}'",
        key.algorithm(),
        token.label()
    );
    print!("{}", util::pem("PUBLIC KEY", key.public_key_der()));
    Ok(())
}

fn csr(args: &CsrArgs) -> Result<(), Error> {
    let uri = parse_uri(&args.uri)?;
    let token = open_token(&uri, &args.token)?;
    let key = Arc::new(Pkcs11Key::open(&token, &uri).map_err(failed("cannot open the key"))?);
    let der = hsm_core::csr_der(key, &args.cn).map_err(|source| Error::Core {
        operation: "cannot make the CSR",
        source,
    })?;
    let pem = util::pem("CERTIFICATE REQUEST", &der);
    match &args.out {
        Some(path) => {
            util::write(path, pem.as_bytes())?;
            println!("wrote {} (CSR for CN {})", path.display(), args.cn);
        }
        None => print!("{pem}"),
    }
    Ok(())
}

fn import_cert(args: &ImportCertArgs) -> Result<(), Error> {
    let certificates = util::load_certificates(&args.cert)?;
    let uri = parse_uri(&args.uri)?;
    let token = open_token(&uri, &args.token)?;
    token
        .store_certificate(&uri, &certificates[0])
        .map_err(failed("cannot store the certificate"))?;
    println!("stored the certificate on token '{}'", token.label());
    if args.chain {
        let label = uri.object.clone().ok_or_else(|| {
            Error::usage(
                "--chain needs object= in the URI (the chain is stored as <object>-chainN)",
            )
        })?;
        for (n, certificate) in certificates.iter().enumerate().skip(1) {
            let mut chain_uri = parse_uri(&args.uri)?;
            chain_uri.object = Some(format!("{label}-chain{n}"));
            chain_uri.id = None;
            token
                .store_certificate(&chain_uri, certificate)
                .map_err(failed("cannot store a chain certificate"))?;
            println!("stored chain certificate {n} as '{label}-chain{n}'");
        }
    }
    Ok(())
}
