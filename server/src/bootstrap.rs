//! The lines an operator is handed for a new host: the pinned `curl | sh`
//! one-liner (the install script at [`SCRIPT_PATH`]) and the `muster-agent
//! enroll` line, for enrollment tokens, batch rows and `hosts replace`.
//! Pure text: the admin API, the console and the CLI print the same lines.

/// Route of the bootstrap script.
pub const SCRIPT_PATH: &str = "/install.sh";

/// The `muster-agent enroll` line for `token`.
pub fn enroll_command(public_url: &str, token: &str, pin: &str) -> String {
    format!("muster-agent enroll --server {public_url} --token {token} --pin {pin}")
}

/// The line an operator pastes on a bare host. `-k` skips CA checks because
/// the server's certificate comes from its private CA; `--pinnedpubkey` is
/// what makes it safe: curl refuses any other key.
pub fn one_liner(public_url: &str, pin: &str, token: &str) -> String {
    format!(
        "curl -fsSk --pinnedpubkey {} {}{SCRIPT_PATH} | sh -s -- --token {}",
        sh_quote(pin),
        public_url.trim_end_matches('/'),
        sh_quote(token)
    )
}

/// `value` as one single-quoted `sh` word.
pub fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_liner_pins_the_key_and_passes_the_token() {
        assert_eq!(
            one_liner("https://m.example:8443/", "sha256//AbC=", "mte_a_b"),
            "curl -fsSk --pinnedpubkey 'sha256//AbC=' https://m.example:8443/install.sh | sh -s -- --token 'mte_a_b'"
        );
    }

    #[test]
    fn the_enroll_line_names_server_token_and_pin() {
        assert_eq!(
            enroll_command("https://m.example:8443", "mte_a_b", "sha256//AbC="),
            "muster-agent enroll --server https://m.example:8443 --token mte_a_b --pin sha256//AbC="
        );
    }
}
