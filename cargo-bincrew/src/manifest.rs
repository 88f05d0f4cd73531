//! `bincrew-manifest.json`: what `stage` put in a deployment directory, for `verify` to check.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context as _};
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name in the deployment directory.
pub const FILE: &str = "bincrew-manifest.json";

/// The manifest format this version writes and reads. Bump it when a field changes meaning or a
/// required field is added; optional fields can be added without a bump.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The tool that wrote it.
    pub generator: String,
    /// The directory of the profile the binaries were built with: `debug`, `release`, or a
    /// custom profile's name.
    pub profile: String,
    /// The `--target` the binaries were built for, when one was given.
    pub target: Option<String>,
    pub binaries: Vec<Entry>,
}

/// Whether a binary is an app or a worker binary (declared by an app).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    App,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::App => "app",
            Role::Worker => "worker",
        }
    }
}

/// One staged binary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Its file name in the deployment directory.
    pub file: String,
    /// Its cargo binary target name, which `[package.metadata.bincrew] workers` refers to.
    pub binary: String,
    pub role: Role,
    pub package: String,
    pub version: Version,
    /// The build id it reported when probed; `null` when it carries none or did not answer.
    pub build_id: Option<String>,
    /// The target triple it reported when probed.
    pub target: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// The worker binaries its package declares, with their requirements.
    #[serde(default)]
    pub requires: BTreeMap<String, VersionReq>,
    /// The worker names it serves, as it reported when probed.
    #[serde(default)]
    pub serves: Vec<String>,
    /// Why its identity is unknown: it did not answer the probe (not a bincrew binary that
    /// serves workers). `null` when it answered.
    #[serde(default)]
    pub probe_error: Option<String>,
}

impl Entry {
    /// Whether its identity (build id, target, served names) is known from a probe.
    pub fn identity_known(&self) -> bool {
        self.probe_error.is_none()
    }
}

impl Manifest {
    pub fn read(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (verify checks a directory made by cargo bincrew stage)",
                path.display()
            )
        })?;
        let invalid = || format!("{} is not a valid bincrew manifest", path.display());
        let value: serde_json::Value = serde_json::from_str(&text).with_context(invalid)?;
        // The format first: a newer manifest may not parse as this one.
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        if format.is_some_and(|f| f > u64::from(FORMAT)) {
            bail!(
                "{} has format {}, newer than this cargo-bincrew reads ({FORMAT}): update cargo-bincrew",
                path.display(),
                format.unwrap_or_default()
            );
        }
        serde_json::from_value(value).with_context(invalid)
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(FILE);
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn entry(&self, binary: &str) -> Option<&Entry> {
        self.binaries.iter().find(|e| e.binary == binary)
    }
}

/// A file's size and SHA-256 (lowercase hex).
pub fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buffer[..n]);
        size += n as u64;
    }
    let mut hex = String::with_capacity(64);
    for byte in hash.finalize().iter() {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok((size, hex))
}
