//! Where the workspace's binaries are: beside this test's own `deps/` folder, so that the
//! black-box tests use the plugin and emulator built in the same target directory and profile
//! (`cargo build --bins` first; `scripts/test.sh` does).

use std::path::PathBuf;

/// The path of the workspace binary `name` in this test's target directory and profile.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test runs from <target>/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --bins)",
        path.display()
    );
    path
}
