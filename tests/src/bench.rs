//! The command line of the benchmark binaries: `-h`/`--help` prints the
//! usage, and a bad argument is refused with it (exit 64, as sysexits'
//! EX_USAGE), never a panic.

/// The arguments after the program name; with `-h` or `--help` among
/// them, prints `usage` and exits 0.
pub fn args(usage: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{usage}");
        std::process::exit(0);
    }
    args
}

/// Refuses the command line: `problem` and `usage` on stderr, exit 64.
pub fn refuse(problem: &str, usage: &str) -> ! {
    let name = std::env::args().next().unwrap_or_default();
    let name = std::path::Path::new(&name)
        .file_name()
        .map_or(name.clone(), |n| n.to_string_lossy().into_owned());
    eprintln!("{name}: {problem}\n\n{usage}");
    std::process::exit(64)
}

/// `value` as a number, or the command line refused naming `what`.
pub fn number<T: std::str::FromStr>(value: &str, what: &str, usage: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| refuse(&format!("{what}: {value:?} is not a number"), usage))
}
