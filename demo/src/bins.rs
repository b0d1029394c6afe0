//! Finding the product's programs (issuer, agent, wallet, testmail), and
//! building them first when the demo was started by `cargo run`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The programs the demo runs.
pub const PROGRAMS: [&str; 3] = ["issuer", "agent", "wallet"];

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub dir: PathBuf,
}

impl Bins {
    /// The programs in `dir`, or beside the demo's own executable. When
    /// `build` is set and the demo runs under cargo (`CARGO` is set), they
    /// are built first with the demo's own profile, so that an edited
    /// source never runs stale.
    pub fn find(dir: Option<PathBuf>, build: bool) -> Result<Bins> {
        let own_dir = std::env::current_exe()
            .context("cannot tell where the demo's executable is")?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let dir = dir.unwrap_or(own_dir);
        if build {
            if let Some(cargo) = std::env::var_os("CARGO") {
                build_programs(&cargo)?;
            }
        }
        for p in PROGRAMS {
            let path = dir.join(p);
            if !path.is_file() {
                bail!(
                    "cannot find the {p} program in {}. Build the workspace first \
                     (`cargo build --release`), run the demo with \
                     `cargo run --release -p demo` (which builds it), or point \
                     --bin-dir at the folder that holds issuer, agent and wallet",
                    dir.display()
                );
            }
        }
        Ok(Bins { dir })
    }

    /// The programs as cargo built them for a test (`cargo` is the test's
    /// `env!("CARGO")`): built now if missing.
    pub fn built(cargo: &str) -> Result<Bins> {
        let mut dir = None;
        for p in PROGRAMS {
            let bin = testmail::harness::workspace_binary(p, cargo)
                .with_context(|| format!("cannot build or find the {p} program"))?;
            dir = bin.parent().map(Path::to_path_buf);
        }
        Bins::find(dir, false)
    }

    pub fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }
}

/// `cargo build` of the programs, in the profile the demo was built with.
fn build_programs(cargo: &std::ffi::OsStr) -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Command::new(cargo);
    c.current_dir(&workspace).arg("build");
    if !cfg!(debug_assertions) {
        c.arg("--release");
    }
    for p in PROGRAMS.iter().chain(["testmail"].iter()) {
        c.args(["-p", p, "--bin", p]);
    }
    eprintln!("Building issuer, agent, wallet and testmail (cargo build)...");
    let status = c
        .status()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("building the programs failed ({status}); the compiler's messages are above");
    }
    Ok(())
}
