//! Running docker and other commands, and cleaning up after a
//! test whether it passed or failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root, which is the Docker build context.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

pub fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

/// Runs docker and returns its trimmed stdout; panics with stderr if it fails.
pub fn docker_ok(args: &[&str]) -> String {
    checked(Command::new("docker").args(args))
}

/// Runs a command and returns its trimmed stdout; panics with its output if it fails.
pub fn checked(command: &mut Command) -> String {
    let out = run(command);
    if !out.status.success() {
        panic!(
            "{command:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Commands that undo what a test created, run in reverse order when the guard drops.
#[derive(Default)]
pub struct Cleanup {
    steps: Vec<Box<dyn FnOnce()>>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a docker command; its failure is ignored (the thing may be gone already).
    pub fn docker(&mut self, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.steps.push(Box::new(move || {
            let _ = Command::new("docker")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }));
    }

    pub fn run(&mut self, step: impl FnOnce() + 'static) {
        self.steps.push(Box::new(step));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some(step) = self.steps.pop() {
            step();
        }
    }
}
