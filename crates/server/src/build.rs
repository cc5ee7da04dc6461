//! Which build this is: the version, and the commit it was built from when the build was told
//! (`SWITCHYARD_GIT_COMMIT` in the compiler's environment, e.g.
//! `SWITCHYARD_GIT_COMMIT=$(git rev-parse --short HEAD) cargo build`, or the Dockerfile's build
//! argument). `--version` and `switchyard_build_info` say the same.

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit this binary was built from, when the build named one.
pub fn commit() -> Option<&'static str> {
    option_env!("SWITCHYARD_GIT_COMMIT")
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

/// `0.1.0 (commit abc1234)`, or just `0.1.0` when the build named no commit.
pub fn version_line() -> String {
    match commit() {
        Some(commit) => format!("{VERSION} (commit {commit})"),
        None => VERSION.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_starts_with_the_package_version() {
        let line = version_line();
        assert!(line.starts_with(VERSION), "{line}");
        assert_eq!(line.contains("commit"), commit().is_some(), "{line}");
    }
}
