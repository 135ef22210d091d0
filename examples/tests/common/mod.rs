//! Shared test helpers: the example binaries, built once per test process, and running them as a
//! user does.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest an example may run before its test fails.
pub const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(180);

/// The path of the runnable example binary `name`.
///
/// Neither `cargo test` (which compiles examples only to check that they build) nor
/// `cargo test --all-targets` (which compiles them as test harnesses) leaves runnable example
/// binaries behind, so the first call runs `cargo build --examples -p <this test's package>` into
/// this test binary's own target directory and profile: a no-op when they are fresh, a few links
/// otherwise.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = match BUILT.get_or_init(build_examples) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "example binary {} is missing after `cargo build --examples`",
        path.display()
    );
    path
}

fn build_examples() -> Result<PathBuf, String> {
    // target/<profile>/deps/<this test binary>
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the test binary is not in <target>/<profile>/deps")?;
    let target_dir = profile_dir
        .parent()
        .ok_or("the profile directory has no parent")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return Err("unreadable profile directory name".into()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--examples",
            "--package",
            env!("CARGO_PKG_NAME"),
            "--profile",
        ])
        .arg(profile)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build --examples -p {}` failed ({}):\n{}",
            env!("CARGO_PKG_NAME"),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(profile_dir.join("examples"))
}

/// What an example printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts a zero exit and returns stdout.
    pub fn success(&self) -> &str {
        assert!(
            self.status.success(),
            "the example failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// The first stdout line containing `needle`, or a failure showing the whole output.
    pub fn line(&self, needle: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no line with {needle:?} in the output:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            })
    }
}

/// Runs example `name` with `args` (and `env`), as `cargo run --example` would, killing it after
/// [`EXAMPLE_TIMEOUT`].
pub fn run_example(name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(example(name));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = wait(&mut child, name);
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

fn wait(child: &mut Child, name: &str) -> ExitStatus {
    let deadline = Instant::now() + EXAMPLE_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("example {name} did not finish within {EXAMPLE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
