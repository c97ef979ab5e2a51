//! Whether a tenant's CUDA source asks the compiler to read a file.
//!
//! A kernel pack's source is compiled on every GPU host by NVRTC, which
//! resolves `#include` against the file system (absolute paths too) and
//! echoes what it read in its log: a pack could read the host's files. So a
//! pack's source may not contain a directive that reads a file (`include`,
//! `include_next`, `import`, `embed`) nor ask whether one exists
//! (`__has_include`). The built-in CUDA headers NVRTC carries need no
//! include; a pack is one self-contained source.
//!
//! The scan is on the text as the preprocessor's first phases see it:
//! line splices (`\` newline) joined, the digraph `%:` and the trigraph
//! `??=` read as `#`, comments skipped between the `#` and the directive's
//! name. It errs towards refusing: a `#include` inside a string or a
//! comment is refused too. What it is not: a C preprocessor; it only finds
//! the few directives that touch files.

/// Directive names that read a file.
const READS_A_FILE: &[&str] = &["include", "include_next", "import", "embed"];
/// Operators that ask whether a file exists.
const PROBES_A_FILE: &[&str] = &["__has_include", "__has_include_next"];

/// What the scan found, naming the line (1-based, as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileDirective {
    pub(crate) line: usize,
    pub(crate) what: String,
}

/// The first directive or operator in `source` that would make the
/// compiler touch a file.
pub(crate) fn file_directive(source: &str) -> Option<FileDirective> {
    let text = logical_text(source);
    let chars = &text.chars;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            let after = skip_blanks_and_comments(chars, i + 1);
            let name: String = chars[after..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_' || **c == '\\')
                .collect();
            let line = text.line_of(i);
            if name.contains('\\') {
                return Some(FileDirective {
                    line,
                    what: format!("a directive name with an escape (`#{name}`)"),
                });
            }
            if READS_A_FILE.contains(&name.as_str()) {
                return Some(FileDirective {
                    line,
                    what: format!("`#{name}`"),
                });
            }
        } else if c == '_' && (i == 0 || !is_identifier_char(chars[i - 1])) {
            let name: String = chars[i..]
                .iter()
                .take_while(|c| is_identifier_char(**c))
                .collect();
            if PROBES_A_FILE.contains(&name.as_str()) {
                return Some(FileDirective {
                    line: text.line_of(i),
                    what: format!("`{name}`"),
                });
            }
            i += name.len().max(1);
            continue;
        }
        i += 1;
    }
    None
}

fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The source with splices joined and `%:`/`??=` as `#`, remembering the
/// line each character was written on.
struct LogicalText {
    chars: Vec<char>,
    lines: Vec<usize>,
}

impl LogicalText {
    fn line_of(&self, at: usize) -> usize {
        self.lines.get(at).copied().unwrap_or(1)
    }
}

fn logical_text(source: &str) -> LogicalText {
    let raw: Vec<char> = source.chars().collect();
    let (mut chars, mut lines) = (Vec::with_capacity(raw.len()), Vec::with_capacity(raw.len()));
    let mut line = 1;
    let mut i = 0;
    while i < raw.len() {
        let rest = &raw[i..];
        // A splice: a backslash (or the trigraph `??/`), optional spaces
        // (accepted by GCC and EDG), then a newline.
        if let Some(len) = splice_len(rest) {
            i += len;
            line += 1;
            continue;
        }
        // The digraph `%:` and the trigraph `??=` are `#`.
        let hash = [&['%', ':'][..], &['?', '?', '=']]
            .into_iter()
            .find(|spelling| rest.starts_with(spelling));
        if let Some(spelling) = hash {
            chars.push('#');
            lines.push(line);
            i += spelling.len();
            continue;
        }
        if rest[0] == '\n' {
            line += 1;
        }
        chars.push(rest[0]);
        lines.push(line);
        i += 1;
    }
    LogicalText { chars, lines }
}

/// The length of the line splice `rest` starts with, if it starts with one.
fn splice_len(rest: &[char]) -> Option<usize> {
    let backslash = match rest {
        ['\\', ..] => 1,
        ['?', '?', '/', ..] => 3,
        _ => return None,
    };
    let gap = rest[backslash..]
        .iter()
        .take_while(|c| matches!(c, ' ' | '\t' | '\r'))
        .count();
    (rest.get(backslash + gap) == Some(&'\n')).then_some(backslash + gap + 1)
}

/// The index after spaces, tabs and comments from `at` (a block comment
/// may span lines; a line comment ends the directive).
fn skip_blanks_and_comments(chars: &[char], mut at: usize) -> usize {
    loop {
        match chars.get(at..at + 2) {
            Some(['/', '*']) => {
                at += 2;
                while at < chars.len() && chars.get(at..at + 2) != Some(&['*', '/']) {
                    at += 1;
                }
                at += 2;
            }
            _ => match chars.get(at) {
                Some(' ' | '\t' | '\x0b' | '\x0c' | '\r') => at += 1,
                _ => return at.min(chars.len()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_that_read_files_are_found_however_they_are_spelled() {
        // (source, the line and what is found)
        let refused: &[(&str, usize, &str)] = &[
            ("#include \"/etc/passwd\"\n", 1, "`#include`"),
            (
                "__global__ void k() {}\n  #  include <x>\n",
                2,
                "`#include`",
            ),
            ("#include_next <a>", 1, "`#include_next`"),
            ("#import \"a\"", 1, "`#import`"),
            ("#embed \"/etc/shadow\"", 1, "`#embed`"),
            ("%:include \"a\"", 1, "`#include`"),
            ("??=include \"a\"", 1, "`#include`"),
            ("#inc\\\nlude \"a\"", 1, "`#include`"),
            ("#inc\\  \r\nlude \"a\"", 1, "`#include`"),
            ("#inc??/\nlude \"a\"", 1, "`#include`"),
            ("# /* a */ include \"a\"", 1, "`#include`"),
            ("# /* spans\nlines */ include \"a\"", 1, "`#include`"),
            ("/* x\n*/ #include \"a\"", 2, "`#include`"),
            (
                "const char* s = \"/*\";\n#include \"a\"\n// */",
                2,
                "`#include`",
            ),
            (
                "#if __has_include(\"/etc/passwd\")\n#endif",
                1,
                "`__has_include`",
            ),
            (
                "#if __has_include_next(<a>)\n#endif",
                1,
                "`__has_include_next`",
            ),
            (
                "#inc\\u006Cude \"a\"",
                1,
                "a directive name with an escape (`#inc\\u006Cude`)",
            ),
            // Refused though harmless: inside a string.
            ("const char* s = \"#include\";", 1, "`#include`"),
        ];
        for (source, line, what) in refused {
            let found = file_directive(source);
            let want = FileDirective {
                line: *line,
                what: (*what).to_owned(),
            };
            assert_eq!(found, Some(want), "{source:?}");
        }
        let accepted = [
            "extern \"C\" __global__ void k(float* x) { x[0] = 1; }",
            "#define N 4\n#pragma unroll\n#if N > 2\n#endif\n",
            "// we include the bias below\nint include = 1; int includes = 2;",
            "int my__has_include = 0;",
            "#define CAT(a, b) a##b\n",
        ];
        for source in accepted {
            assert_eq!(file_directive(source), None, "{source:?}");
        }
    }
}
