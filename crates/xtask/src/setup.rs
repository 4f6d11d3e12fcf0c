//! Installs what the project needs and skips what is present: Debian packages, the wasm32
//! toolchain route, trunk, wasm-bindgen-cli and the browser tests' npm packages.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::{self, on_path, output, root};

/// trunk version the project is built and tested with (0.22 needs rustc ≥ 1.96.1).
pub const TRUNK_VERSION: &str = "0.21.14";

/// How the wasm32 standard library is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmRoute {
    /// `rustup target add wasm32-unknown-unknown` worked: plain `cargo build --target`.
    Rustup,
    /// Debian's rustc-web 1.96, which builds std for wasm32 with `-Zbuild-std`.
    Debian,
}

/// What the rest of xtask needs to know after set-up.
pub struct Env {
    /// The wasm32 route in use.
    pub wasm: WasmRoute,
    /// The trunk binary.
    pub trunk: PathBuf,
}

/// Runs every set-up step; each prints what it installs or that nothing was needed.
pub fn run() -> Result<Env, String> {
    let wasm = wasm_route();
    eprintln!("xtask: wasm32 route: {wasm:?}");
    let mut packages = vec!["chromium", "mesa-vulkan-drivers", "ca-certificates"];
    if !on_path("node") || !on_path("npm") {
        packages.extend(["nodejs", "npm"]);
    }
    if !on_path("cc") {
        packages.push("gcc");
    }
    if wasm == WasmRoute::Debian {
        packages.extend(["rustc-web", "cargo-web", "rust-web-src", "lld-19"]);
    }
    ensure_apt(&packages)?;
    let trunk = ensure_cargo_tool("trunk", "trunk", TRUNK_VERSION, true)?;
    let bindgen_version = locked_version("wasm-bindgen")?;
    ensure_cargo_tool("wasm-bindgen-cli", "wasm-bindgen", &bindgen_version, false)?;
    ensure_npm()?;
    Ok(Env { wasm, trunk })
}

/// Chooses the wasm32 route: `TINYLORA_WASM_ROUTE=rustup|debian` forces one; otherwise rustup's
/// target when it is installed or can be added within two minutes, else Debian's.
fn wasm_route() -> WasmRoute {
    match std::env::var("TINYLORA_WASM_ROUTE").as_deref() {
        Ok("debian") => return WasmRoute::Debian,
        Ok("rustup") => return WasmRoute::Rustup,
        _ => {}
    }
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|list| list.lines().any(|l| l.trim() == "wasm32-unknown-unknown"));
    if installed {
        return WasmRoute::Rustup;
    }
    eprintln!("xtask: trying `rustup target add wasm32-unknown-unknown`");
    let added = Command::new("rustup")
        .args(["target", "add", "wasm32-unknown-unknown"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .is_some_and(|child| wait_with_timeout(child, Duration::from_secs(120)));
    if added {
        WasmRoute::Rustup
    } else {
        eprintln!("xtask: rustup cannot add wasm32 here; using Debian's rustc-web with build-std");
        WasmRoute::Debian
    }
}

fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(200)),
            _ => {
                let _ = child.kill();
                return false;
            }
        }
    }
}

fn is_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.trim() == "install ok installed")
}

/// How missing Debian packages get installed, or why they cannot be.
#[derive(Debug, PartialEq, Eq)]
enum AptPlan {
    /// Nothing is missing.
    Nothing,
    /// Run apt-get, through sudo when not root.
    Install { sudo: bool },
    /// The user must act; the message says exactly what to run.
    Refuse(String),
}

fn plan_apt(missing: &[&str], has_apt: bool, is_root: bool, has_sudo: bool) -> AptPlan {
    if missing.is_empty() {
        return AptPlan::Nothing;
    }
    let list = missing.join(" ");
    if !has_apt {
        return AptPlan::Refuse(format!(
            "missing packages: {list}. This set-up expects Debian 12 with apt-get; install the \
             equivalents with your package manager, then run the command again."
        ));
    }
    if !is_root && !has_sudo {
        return AptPlan::Refuse(format!(
            "missing Debian packages: {list}\nInstalling them needs root. Run:\n\n    \
             sudo apt-get update && sudo apt-get install -y {list}\n\nthen run this command again."
        ));
    }
    AptPlan::Install { sudo: !is_root }
}

/// Installs the missing Debian packages with apt-get (as root, or through passwordless sudo).
fn ensure_apt(packages: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    let is_root = output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0");
    let has_sudo = !is_root
        && Command::new("sudo")
            .args(["-n", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let sudo = match plan_apt(&missing, on_path("apt-get"), is_root, has_sudo) {
        AptPlan::Nothing => {
            eprintln!("xtask: Debian packages present: {}", packages.join(" "));
            return Ok(());
        }
        AptPlan::Refuse(message) => return Err(message),
        AptPlan::Install { sudo } => sudo,
    };
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let apt = |args: &[&str]| {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    proc::run(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q"]);
    install.args(&missing);
    proc::run(&mut install)
}

/// The version of `package` pinned in Cargo.lock.
fn locked_version(package: &str) -> Result<String, String> {
    let path = root().join("Cargo.lock");
    let lock = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let needle = format!("name = \"{package}\"\nversion = \"");
    let start = lock
        .find(&needle)
        .ok_or_else(|| format!("{}: no `{package}` package", path.display()))?
        + needle.len();
    let end = lock[start..]
        .find('"')
        .ok_or_else(|| format!("{}: malformed version of `{package}`", path.display()))?;
    Ok(lock[start..start + end].to_string())
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default()
        .join("bin")
}

/// Where `binary` lives: cargo's bin folder first, then PATH.
fn tool_path(binary: &str) -> PathBuf {
    let in_cargo = cargo_bin_dir().join(binary);
    if in_cargo.is_file() {
        in_cargo
    } else {
        PathBuf::from(binary)
    }
}

/// Installs `krate` at exactly `version` with `cargo install` unless `binary --version` says so.
fn ensure_cargo_tool(
    krate: &str,
    binary: &str,
    version: &str,
    locked: bool,
) -> Result<PathBuf, String> {
    let path = tool_path(binary);
    let present = output(Command::new(&path).arg("--version"))
        .is_some_and(|v| v.split_whitespace().any(|word| word == version));
    if present {
        eprintln!("xtask: {binary} {version} present");
        return Ok(path);
    }
    eprintln!("xtask: installing {krate} {version} with cargo install (a few minutes, once)");
    let install = |locked: bool| {
        let mut cmd = proc::cargo();
        cmd.args(["install", krate, "--version", version])
            .env_remove("CARGO_TARGET_DIR");
        if locked {
            cmd.arg("--locked");
        }
        proc::run(&mut cmd)
    };
    // The crates.io mirror can lack a locked dependency version: retry unlocked then.
    install(locked).or_else(|e| if locked { install(false) } else { Err(e) })?;
    Ok(tool_path(binary))
}

/// Installs the browser tests' npm packages from the committed lock file when it changed.
fn ensure_npm() -> Result<(), String> {
    let dir = root().join("tests/browser");
    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(lock_time), Some(installed_time)) = (modified(&lock), modified(&installed))
        && installed_time >= lock_time
    {
        eprintln!("xtask: npm packages present (tests/browser/node_modules)");
        return Ok(());
    }
    eprintln!("xtask: installing npm packages from tests/browser/package-lock.json");
    proc::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_plan_names_the_exact_command_when_it_cannot_install() {
        assert_eq!(plan_apt(&[], false, false, false), AptPlan::Nothing);
        assert_eq!(
            plan_apt(&["chromium"], true, true, false),
            AptPlan::Install { sudo: false }
        );
        assert_eq!(
            plan_apt(&["chromium"], true, false, true),
            AptPlan::Install { sudo: true }
        );
        let AptPlan::Refuse(message) = plan_apt(&["chromium", "npm"], true, false, false) else {
            panic!("no root, no sudo: must refuse");
        };
        assert!(message.contains("sudo apt-get update && sudo apt-get install -y chromium npm"));
        let AptPlan::Refuse(message) = plan_apt(&["chromium"], false, true, false) else {
            panic!("no apt-get: must refuse");
        };
        assert!(message.contains("expects Debian 12 with apt-get"));
    }
}
