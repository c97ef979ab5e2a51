//! `spillway completions SHELL` and `spillway man --out DIR`: shell
//! completions (clap_complete) and man pages (clap_mangen, one per command:
//! `spillway.1`, `spillway-host.1`, `spillway-fn-create.1`, …), both made
//! from the same definitions as `--help`, so they cannot drift from it.
//! The deploy files install them (`deploy/systemd/README.md`, the
//! Dockerfile).

use std::path::Path;

/// The completion script for `shell`, written to `out` (an error, such as
/// a closed pipe, is the caller's to report).
pub(crate) fn completions(
    command: clap::Command,
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut command = command;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "spillway", &mut script);
    out.write_all(&script)
}

/// A man page for the binary and each visible command under it, into
/// `dir` (created if missing); how many.
pub(crate) fn man_pages(command: clap::Command, dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(command, dir)?;
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("spillway")
            .subcommand(clap::Command::new("host").arg(clap::Arg::new("slots").long("slots")))
            .subcommand(clap::Command::new("hidden").hide(true))
    }

    #[test]
    fn completions_name_the_commands_and_their_flags() {
        let mut out = Vec::new();
        completions(command(), clap_complete::Shell::Bash, &mut out).unwrap();
        let script = String::from_utf8(out).unwrap();
        assert!(
            script.contains("host") && script.contains("--slots"),
            "{script}"
        );
    }

    #[test]
    fn every_visible_command_gets_a_page() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(man_pages(command(), dir.path()).unwrap(), 2);
        let host = std::fs::read_to_string(dir.path().join("spillway-host.1")).unwrap();
        assert!(host.starts_with(".ie") || host.contains(".TH"), "{host}");
        assert!(host.contains("slots"));
        assert!(!dir.path().join("spillway-hidden.1").exists());
    }
}
