//! `spillway host --config FILE`: a host's settings from a TOML file, and
//! `spillway config example|check`. (`spillway sidecar` and `spillway node`,
//! a host's halves run apart as under Kubernetes, take `--config` the same
//! way, with their own flags as keys.)
//!
//! Every visible flag of `spillway host` is a key of the same name, without
//! its dashes (`max-memory-mib = 512`; a repeatable flag takes a list,
//! `label = ["zone=a"]`; a switch takes `true` or `false`). A flag given on
//! the command line, or through its environment variable, wins over the
//! file. The file is turned into flags and parsed by the same clap
//! definitions as the command line, so a key takes exactly what its flag
//! takes and both are documented in one place (the flag's doc comment, which
//! `spillway config example` prints).
//!
//! What it is not: a second set of settings. Hidden flags (tests and
//! benchmarks only) have no key.

use clap::builder::ArgAction;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The flag that names the file.
pub(crate) const CONFIG_FLAG: &str = "config";

/// Why a configuration file was refused. Each names the file and, where
/// there is one, the key: fix that key and start again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{file}: not TOML: {source}")]
    Syntax {
        file: PathBuf,
        source: Box<toml::de::Error>,
    },
    /// A key no flag has (a typo, or a flag of another command).
    #[error("{file}: unknown key `{key}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownKey {
        file: PathBuf,
        key: String,
        suggestion: Option<String>,
    },
    /// A value its flag would not take.
    #[error("{file}: `{key}`: {reason}")]
    BadValue {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

/// The keys a file may hold for `command`: its visible long flags, but
/// `--config` itself.
pub(crate) fn keys(command: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    command.get_arguments().filter(|a| {
        !a.is_hide_set()
            && a.get_long().is_some_and(|l| l != CONFIG_FLAG)
            && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
    })
}

/// Reads and checks `file` for `command`: the flags it stands for, leaving
/// out the keys for which `given` says the command line already has a value.
pub(crate) fn load(
    file: &Path,
    command: &clap::Command,
    given: impl Fn(&clap::Arg) -> bool,
) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Syntax {
        file: file.to_owned(),
        source: Box::new(source),
    })?;
    to_flags(file, &table, command, given)
}

/// The flags a parsed file stands for (pure: [`load`] without the reading).
/// Every key is checked against its flag's own parser, alone, so an error
/// names the key whatever else the file holds.
pub(crate) fn to_flags(
    file: &Path,
    table: &toml::Table,
    command: &clap::Command,
    given: impl Fn(&clap::Arg) -> bool,
) -> Result<Vec<OsString>, ConfigError> {
    let mut flags = Vec::new();
    for (key, value) in table {
        let bad = |reason: String| ConfigError::BadValue {
            file: file.to_owned(),
            key: key.clone(),
            reason,
        };
        let Some(arg) = keys(command).find(|a| a.get_long() == Some(key.as_str())) else {
            return Err(ConfigError::UnknownKey {
                file: file.to_owned(),
                key: key.clone(),
                suggestion: closest(key, keys(command).filter_map(|a| a.get_long())),
            });
        };
        let these = flags_for(key, arg, value).map_err(bad)?;
        // Alone through the flag's parser, so a bad value is this key's.
        // What ties keys together (one requires or excludes another) is
        // checked when the whole command line is parsed.
        let mut alone = command
            .clone()
            .no_binary_name(true)
            .mut_args(|a| a.required(false));
        if let Err(e) = alone.try_get_matches_from_mut(&these)
            && matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            )
        {
            let reason = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.kind().to_string());
            return Err(bad(reason));
        }
        if !given(arg) {
            flags.extend(these);
        }
    }
    Ok(flags)
}

/// `--key=value` for one key (one token, so a value starting with `-` is
/// not taken for a flag; `--key` alone for a switch set to true, nothing
/// for one set to false; the flag once per item for a list).
fn flags_for(key: &str, arg: &clap::Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let switch = matches!(arg.get_action(), ArgAction::SetTrue);
    let list = matches!(arg.get_action(), ArgAction::Append);
    let flag = |v: String| OsString::from(format!("--{key}={v}"));
    match value {
        toml::Value::Boolean(on) if switch => Ok(if *on {
            vec![OsString::from(format!("--{key}"))]
        } else {
            Vec::new()
        }),
        _ if switch => Err(format!("a switch: `{key} = true` or `{key} = false`")),
        toml::Value::Array(items) if list => items.iter().map(|i| scalar(i).map(flag)).collect(),
        toml::Value::Array(_) => Err("takes one value, not a list".into()),
        one => Ok(vec![flag(scalar(one)?)]),
    }
}

/// A scalar value as its flag would be typed.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "takes a string or a number, not a {}",
            other.type_str()
        )),
    }
}

/// The known key nearest to `key`, if it is near enough to be a typo.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<String> {
    known
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_owned())
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `argv` with the flags of the `--config` file its command names (`host`,
/// `init`, `join`, `sidecar`, `node`) appended, for keys the command line
/// does not set. An `argv` that does not parse, or names no file, comes back as it
/// is (the real parse reports what is wrong with it).
pub(crate) fn expand(
    root: &clap::Command,
    argv: Vec<OsString>,
) -> Result<Vec<OsString>, ConfigError> {
    // A required flag may come from the file (`spillway node`'s `socket`).
    let lenient = root
        .clone()
        .mut_subcommands(|c| c.mut_args(|a| a.required(false)));
    let Ok(matches) = lenient.try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(argv);
    };
    let Some(command) = root.find_subcommand(name) else {
        return Ok(argv);
    };
    if !command.get_arguments().any(|a| a.get_id() == CONFIG_FLAG) {
        return Ok(argv);
    }
    let Some(file) = sub.get_one::<PathBuf>(CONFIG_FLAG) else {
        return Ok(argv);
    };
    let given = |arg: &clap::Arg| {
        matches!(
            sub.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let flags = load(file, command, given)?;
    let mut argv = argv;
    argv.extend(flags);
    Ok(argv)
}

/// A commented file of every key at its default (`spillway config
/// example`): uncommenting a line and changing its value sets that key.
pub(crate) fn example(command: &clap::Command) -> String {
    let name = command.get_name();
    let mut out = format!(
        "# spillway {name} --config FILE\n\
         # Every key is a flag of `spillway {name}`, and a flag given on the\n\
         # command line wins over the file. Each line below is the key's\n\
         # default: uncomment it to change it.\n",
    );
    let mut heading = None;
    for arg in keys(command) {
        if arg.get_help_heading() != heading {
            heading = arg.get_help_heading();
            let title = heading.unwrap_or("Other");
            out.push_str(&format!("\n# {}\n# {title}\n", "=".repeat(title.len())));
        }
        out.push('\n');
        for line in wrap(&help(arg), 76) {
            out.push_str(format!("# {line}").trim_end());
            out.push('\n');
        }
        out.push_str(&format!(
            "# {} = {}\n",
            arg.get_long().unwrap_or_default(),
            default(arg)
        ));
    }
    out
}

/// `text`'s words in lines of at most `width` characters (a longer word
/// has a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// The keys as a Markdown table (`spillway config example --markdown`;
/// docs/configuration.md holds it).
pub(crate) fn markdown(command: &clap::Command) -> String {
    let mut out = String::from("| key | default | what it sets |\n| --- | --- | --- |\n");
    for arg in keys(command) {
        let meaning = help(arg).replace('\n', " ").replace('|', "\\|");
        let default = match default(arg) {
            d if d.ends_with("(unset)") => "unset".to_owned(),
            d => format!("`{d}`"),
        };
        out.push_str(&format!(
            "| `{}` | {default} | {meaning} |\n",
            arg.get_long().unwrap_or_default(),
        ));
    }
    out
}

/// An argument's whole doc comment.
fn help(arg: &clap::Arg) -> String {
    arg.get_long_help()
        .or(arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// An argument's default as a TOML value (`[]` for a list, `false` for a
/// switch, a placeholder in angle brackets where there is none).
fn default(arg: &clap::Arg) -> String {
    match arg.get_action() {
        ArgAction::SetTrue => return "false".into(),
        ArgAction::Append => return "[]".into(),
        _ => {}
    }
    let Some(value) = arg.get_default_values().first() else {
        let name = arg
            .get_value_names()
            .and_then(|n| n.first())
            .map_or("VALUE".to_owned(), ToString::to_string);
        return format!("<{name}> (unset)");
    };
    let value = value.to_string_lossy();
    if value.parse::<i64>().is_ok() || value.parse::<f64>().is_ok() {
        value.into_owned()
    } else {
        toml::Value::String(value.into_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn command() -> Command {
        Command::new("host")
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_parser(clap::value_parser!(PathBuf)),
            )
            .arg(
                Arg::new("slots")
                    .long("slots")
                    .value_parser(clap::value_parser!(u32))
                    .default_value("4"),
            )
            .arg(
                Arg::new("listen")
                    .long("listen")
                    .default_value("127.0.0.1:7070"),
            )
            .arg(
                Arg::new("no-burst")
                    .long("no-burst")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("label").long("label").action(ArgAction::Append))
            .arg(Arg::new("secret").long("secret").hide(true))
    }

    fn flags(toml: &str, given: &[&str]) -> Result<Vec<String>, ConfigError> {
        let table: toml::Table = toml.parse().unwrap();
        to_flags(Path::new("h.toml"), &table, &command(), |a| {
            given.contains(&a.get_id().as_str())
        })
        .map(|f| f.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn keys_become_flags() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("slots = 3", &[], &["--slots=3"]),
            ("listen = \"0.0.0.0:1\"", &[], &["--listen=0.0.0.0:1"]),
            ("no-burst = true", &[], &["--no-burst"]),
            ("no-burst = false", &[], &[]),
            (
                "label = [\"a=1\", \"b=2\"]",
                &[],
                &["--label=a=1", "--label=b=2"],
            ),
            ("label = []", &[], &[]),
            // A flag on the command line wins: the key is left out.
            ("slots = 3\nlisten = \"x:1\"", &["slots"], &["--listen=x:1"]),
        ];
        for (toml, given, want) in cases {
            assert_eq!(flags(toml, given).unwrap(), *want, "{toml}");
        }
    }

    #[test]
    fn bad_keys_are_named() {
        let cases: &[(&str, &str)] = &[
            (
                "slot = 3",
                "h.toml: unknown key `slot` (did you mean `slots`?)",
            ),
            ("zzz = 3", "h.toml: unknown key `zzz`"),
            ("secret = \"x\"", "h.toml: unknown key `secret`"),
            ("config = \"x\"", "h.toml: unknown key `config`"),
            (
                "slots = \"four\"",
                "h.toml: `slots`: invalid digit found in string",
            ),
            ("slots = -1", "h.toml: `slots`: -1 is not in 0..=4294967295"),
            (
                "slots = [1, 2]",
                "h.toml: `slots`: takes one value, not a list",
            ),
            (
                "no-burst = 1",
                "h.toml: `no-burst`: a switch: `no-burst = true` or `no-burst = false`",
            ),
            (
                "listen = { a = 1 }",
                "h.toml: `listen`: takes a string or a number, not a table",
            ),
        ];
        for (toml, want) in cases {
            let err = flags(toml, &[]).unwrap_err();
            assert_eq!(err.to_string(), *want, "{toml}");
        }
    }

    #[test]
    fn the_example_is_every_key_at_its_default() {
        let example = example(&command());
        let uncommented: String = example
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let table: toml::Table = uncommented.parse().unwrap();
        let keys: Vec<&str> = table.keys().map(String::as_str).collect();
        assert_eq!(keys, ["label", "listen", "no-burst", "slots"]);
        assert_eq!(
            flags(&uncommented, &[]).unwrap(),
            ["--listen=127.0.0.1:7070", "--slots=4"]
        );
    }

    #[test]
    fn help_is_wrapped_at_word_boundaries() {
        let cases: &[(&str, usize, &[&str])] = &[
            ("", 10, &[]),
            ("one two three", 7, &["one two", "three"]),
            ("one two three", 100, &["one two three"]),
            ("averyverylongword x", 5, &["averyverylongword", "x"]),
            ("a\nb  c", 10, &["a b c"]),
        ];
        for (text, width, want) in cases {
            assert_eq!(wrap(text, *width), *want, "{text:?}");
        }
    }

    #[test]
    fn near_keys_are_suggested_far_ones_not() {
        let known = ["max-memory-mib", "slots", "listen"];
        assert_eq!(
            closest("max-memory-mb", known.into_iter()).as_deref(),
            Some("max-memory-mib")
        );
        assert_eq!(
            closest("lisen", known.into_iter()).as_deref(),
            Some("listen")
        );
        assert_eq!(closest("gpu-count", known.into_iter()), None);
    }
}
