//! Which imports the node provides, so an upload that needs anything else
//! is refused with the name of what it needs.
//!
//! The node links `spillway:runtime/{job,gpu}@0.1.x` and the WASI 0.2
//! interfaces of `wasi:cli/imports` plus `wasi:http/{types,
//! outgoing-handler}` (see `sandbox`). Wasmtime's linker matches any
//! semver-compatible version, so an import of `wasi:io/poll@0.2.9` or
//! `@0.2.12` links against the one `wasmtime-wasi` provides; WASI 0.3, a
//! bare function import or an interface of another package does not.
//!
//! Pure: the names in, the first unsupported one out. The linker still
//! type-checks everything that passes (a wrong signature is
//! `invalid_artifact` with Wasmtime's reason).

/// Interfaces linked per package, with the version family each needs.
const PROVIDED: &[(&str, Family, &[&str])] = &[
    ("spillway:runtime", Family::Zero(1), &["job", "gpu"]),
    ("wasi:io", Family::Zero(2), &["error", "poll", "streams"]),
    (
        "wasi:clocks",
        Family::Zero(2),
        &["monotonic-clock", "wall-clock"],
    ),
    (
        "wasi:random",
        Family::Zero(2),
        &["random", "insecure", "insecure-seed"],
    ),
    (
        "wasi:cli",
        Family::Zero(2),
        &[
            "environment",
            "exit",
            "stdin",
            "stdout",
            "stderr",
            "terminal-input",
            "terminal-output",
            "terminal-stdin",
            "terminal-stdout",
            "terminal-stderr",
        ],
    ),
    ("wasi:filesystem", Family::Zero(2), &["types", "preopens"]),
    (
        "wasi:sockets",
        Family::Zero(2),
        &[
            "network",
            "instance-network",
            "tcp",
            "tcp-create-socket",
            "udp",
            "udp-create-socket",
            "ip-name-lookup",
        ],
    ),
    ("wasi:http", Family::Zero(2), &["types", "outgoing-handler"]),
];

/// A semver family: `Zero(m)` is every `0.m.x`.
#[derive(Debug, Clone, Copy)]
enum Family {
    Zero(u64),
}

impl Family {
    fn admits(self, version: &str) -> bool {
        let mut parts = version.split('.');
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        // Pre-release and build suffixes (`0.2.0-rc-2023-11-10`) are other
        // interfaces as far as semver goes: not linked.
        let numeric = |s: &str| s.parse::<u64>().ok();
        match self {
            Family::Zero(m) => {
                numeric(major) == Some(0) && numeric(minor) == Some(m) && numeric(patch).is_some()
            }
        }
    }
}

/// Whether the node provides the import named `name` (as a component
/// names its imports: `wasi:io/poll@0.2.9`).
pub(crate) fn provided(name: &str) -> bool {
    let Some((path, version)) = name.split_once('@') else {
        return false;
    };
    let Some((package, interface)) = path.split_once('/') else {
        return false;
    };
    PROVIDED.iter().any(|(p, family, interfaces)| {
        *p == package && interfaces.contains(&interface) && family.admits(version)
    })
}

/// The first import in `names` the node does not provide.
pub(crate) fn first_unsupported<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names.into_iter().find(|name| !provided(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_linked_by_package_interface_and_version_family() {
        let cases: &[(&str, bool)] = &[
            ("spillway:runtime/job@0.1.0", true),
            ("spillway:runtime/gpu@0.1.0", true),
            ("spillway:runtime/gpu@0.1.7", true),
            ("spillway:runtime/gpu@0.2.0", false),
            ("spillway:runtime/weights@0.1.0", false),
            ("wasi:io/poll@0.2.9", true),
            ("wasi:io/streams@0.2.0", true),
            ("wasi:io/streams@0.2.12", true),
            ("wasi:cli/exit@0.2.9", true),
            ("wasi:cli/terminal-stderr@0.2.12", true),
            ("wasi:filesystem/preopens@0.2.9", true),
            ("wasi:sockets/ip-name-lookup@0.2.9", true),
            ("wasi:http/outgoing-handler@0.2.10", true),
            ("wasi:http/types@0.2.10", true),
            // Not linked: servers, other versions, other packages, bare names.
            ("wasi:http/incoming-handler@0.2.10", false),
            ("wasi:io/poll@0.3.0", false),
            ("wasi:io/poll@1.0.0", false),
            ("wasi:io/poll@0.2.0-rc-2023-11-10", false),
            ("wasi:io/poll", false),
            ("wasi:clocks/timezone@0.2.9", false),
            ("wasi:keyvalue/store@0.2.0", false),
            ("acme:secrets/vault@0.2.0", false),
            ("fetch-secret", false),
            ("", false),
        ];
        for (name, want) in cases {
            assert_eq!(provided(name), *want, "{name}");
        }
    }

    #[test]
    fn the_first_unsupported_import_is_named() {
        let names = [
            "wasi:io/poll@0.2.9",
            "spillway:runtime/job@0.1.0",
            "wasi:keyvalue/store@0.2.0",
            "also:missing/thing@1.0.0",
        ];
        assert_eq!(first_unsupported(names), Some("wasi:keyvalue/store@0.2.0"));
        assert_eq!(first_unsupported(names[..2].iter().copied()), None);
    }
}
