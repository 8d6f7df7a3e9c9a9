//! The stand-in's command line: the subset of the `alloy` CLI Muster uses.
//! Pure parsing; the binary does the IO.

use std::path::PathBuf;

/// The version reported when `ALLOY_STANDIN_VERSION` is not set: new enough
/// for `alloy validate` (1.9+).
pub const DEFAULT_VERSION: &str = "v1.10.0";

/// Where `alloy run` listens unless told otherwise (as real Alloy).
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:12345";

pub const USAGE: &str = "\
alloy-standin: a stand-in for Grafana Alloy, used by Muster's tests.
It is not Alloy: it checks syntax, knows a fixed list of components and serves
canned exporter metrics.

Usage:
  alloy-standin --version
  alloy-standin fmt [FILE]        check syntax, print FILE (stdin when absent or -)
  alloy-standin validate [--stability.level=LEVEL] FILE
                                  check syntax and that every component is known
                                  (LEVEL: generally-available, public-preview, experimental)
  alloy-standin run [--server.http.listen-addr=ADDR] [--storage.path=P] [FLAGS] CONFIG
                                  serve /-/ready, /-/healthy, /-/reload, /metrics and
                                  /api/v0/component/<id>/metrics; SIGHUP reloads CONFIG

Environment:
  ALLOY_STANDIN_VERSION  version to report (default v1.10.0), e.g. v1.8.2
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    /// `fmt`; `None` reads stdin.
    Fmt(Option<PathBuf>),
    Validate(PathBuf),
    Run {
        listen_addr: String,
        config: PathBuf,
    },
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match sub.as_str() {
        "--help" | "-h" | "help" => Ok(Command::Help),
        "--version" | "-v" => Ok(Command::Version),
        "fmt" => match positionals(rest, &[])?.as_slice() {
            [] => Ok(Command::Fmt(None)),
            [file] if file == "-" => Ok(Command::Fmt(None)),
            [file] => Ok(Command::Fmt(Some(PathBuf::from(file)))),
            _ => Err("fmt takes at most one file".into()),
        },
        "validate" => {
            stability_level(rest)?;
            match positionals(rest, &[])?.as_slice() {
                [file] => Ok(Command::Validate(PathBuf::from(file))),
                _ => Err("validate takes exactly one file".into()),
            }
        }
        "run" => run(rest),
        other => Err(format!("unknown command {other:?} for \"alloy\"")),
    }
}

fn run(args: &[String]) -> Result<Command, String> {
    const LISTEN: &str = "--server.http.listen-addr";
    let mut listen_addr = DEFAULT_LISTEN_ADDR.to_string();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(value) = arg.strip_prefix(LISTEN).and_then(|v| v.strip_prefix('=')) {
            listen_addr = value.to_string();
        } else if arg == LISTEN {
            listen_addr = iter
                .next()
                .ok_or("--server.http.listen-addr needs a value")?
                .clone();
        }
    }
    match positionals(args, &[LISTEN, "--storage.path"])?.as_slice() {
        [config] => Ok(Command::Run {
            listen_addr,
            config: PathBuf::from(config),
        }),
        _ => Err("run takes exactly one config path".into()),
    }
}

/// The stability levels Alloy's `--stability.level` takes.
pub const STABILITY_LEVELS: [&str; 3] = ["generally-available", "public-preview", "experimental"];

/// Checks a `--stability.level=LEVEL` among `args` (the form the agent
/// passes), refusing an unknown level as Alloy's flag parsing does, so tests
/// can see which flags `validate` was given.
fn stability_level(args: &[String]) -> Result<(), String> {
    const FLAG: &str = "--stability.level";
    for level in args
        .iter()
        .filter_map(|a| a.strip_prefix(FLAG)?.strip_prefix('='))
    {
        if !STABILITY_LEVELS.contains(&level) {
            return Err(format!(
                "invalid argument {level:?} for \"{FLAG}\" flag: invalid stability level {level:?} (one of {})",
                STABILITY_LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// The non-flag arguments. Flags are ignored: `--flag=value`, `--flag`, and
/// `--flag value` for the flags in `with_value`.
fn positionals(args: &[String], with_value: &[&str]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if with_value.contains(&arg.as_str()) {
            iter.next().ok_or_else(|| format!("{arg} needs a value"))?;
        } else if arg == "-" || !arg.starts_with('-') {
            out.push(arg.clone());
        }
    }
    Ok(out)
}

/// The `--version` line, as real Alloy prints it.
pub fn version_line(version: &str) -> String {
    format!("alloy, version {version} (branch: stand-in, revision: muster-alloy-standin)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &str) -> Result<Command, String> {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    #[test]
    fn run_takes_the_listen_addr_in_either_form_and_ignores_other_flags() {
        let want = |addr: &str| Command::Run {
            listen_addr: addr.into(),
            config: "/etc/alloy/config.alloy".into(),
        };
        assert_eq!(
            parse_str(
                "run --server.http.listen-addr=0.0.0.0:1 --storage.path=/x /etc/alloy/config.alloy"
            ),
            Ok(want("0.0.0.0:1"))
        );
        assert_eq!(
            parse_str("run --server.http.listen-addr 127.0.0.1:0 --storage.path /x --stability.level=generally-available /etc/alloy/config.alloy"),
            Ok(want("127.0.0.1:0"))
        );
        assert_eq!(
            parse_str("run /etc/alloy/config.alloy"),
            Ok(want(DEFAULT_LISTEN_ADDR))
        );
        assert!(parse_str("run").is_err());
    }

    #[test]
    fn subcommands() {
        assert_eq!(parse_str("--version"), Ok(Command::Version));
        assert_eq!(parse_str(""), Ok(Command::Help));
        assert_eq!(parse_str("fmt"), Ok(Command::Fmt(None)));
        assert_eq!(parse_str("fmt -"), Ok(Command::Fmt(None)));
        assert_eq!(
            parse_str("fmt a.alloy"),
            Ok(Command::Fmt(Some("a.alloy".into())))
        );
        assert_eq!(
            parse_str("validate --stability.level=public-preview a.alloy"),
            Ok(Command::Validate("a.alloy".into()))
        );
        let bad = parse_str("validate --stability.level=bogus a.alloy").unwrap_err();
        assert!(bad.contains("invalid stability level \"bogus\""), "{bad}");
        assert!(parse_str("convert a").is_err());
    }

    #[test]
    fn version_line_matches_alloy() {
        assert_eq!(
            version_line("v1.8.2"),
            "alloy, version v1.8.2 (branch: stand-in, revision: muster-alloy-standin)"
        );
    }
}
