//! `muster-server batch …`: import a CSV/JSON file of hosts, print their
//! enrollment lines (plain, cloud-init or CSV), follow a batch's progress,
//! and reissue tokens for rows that failed.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{labels_text, path_segment, print_json, table, time, AdminArgs, AdminClient};
use crate::admin_wire::{
    BatchImport, BatchImported, BatchRetried, BatchRetry, BatchStatus, HostState, IssuedToken,
};
use crate::batch::{EntryStatus, Format};
use crate::store::BatchRecord;

/// How to print the issued enrollment lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One `muster-agent enroll …` line per host, in a table
    Lines,
    /// A `#cloud-config` user-data document per host
    CloudInit,
    /// hostname,line,token,enroll_command (with a header)
    Csv,
}

/// `batch import FILE`.
pub async fn import(
    args: &AdminArgs,
    file: &Path,
    format: Option<Format>,
    skip_invalid: bool,
    ttl: Option<Duration>,
    output: Output,
) -> Result<()> {
    let content =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let format = format.or_else(|| match file.extension().and_then(|e| e.to_str()) {
        Some("json") => Some(Format::Json),
        Some("csv") => Some(Format::Csv),
        _ => None,
    });
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "batch".into());
    let req = BatchImport {
        format,
        content,
        name: Some(name),
        skip_invalid,
        ttl_secs: ttl.map(|d| d.as_secs()),
    };
    let done: BatchImported = AdminClient::new(args)?
        .post("/v1/admin/batches", &req)
        .await?;
    if args.json {
        return print_json(&done);
    }
    if output == Output::Lines {
        println!(
            "Batch {} ({:?}): {} hosts pre-registered as pending, each with a one-time token bound to its hostname.",
            done.batch.id,
            done.batch.name,
            done.hosts.len()
        );
        println!("Tokens are shown only now. Run each line on its host:");
    }
    print!("{}", render(output, &done.server, &done.pin, &done.hosts));
    if !done.invalid.is_empty() {
        eprintln!("Skipped {} invalid rows:", done.invalid.len());
        for row in &done.invalid {
            eprintln!("  {row}");
        }
    }
    if output == Output::Lines {
        println!(
            "Follow the rollout: muster-server batch status {} --watch",
            done.batch.id
        );
    }
    Ok(())
}

/// The issued tokens in the chosen form.
pub fn render(output: Output, server: &str, pin: &str, hosts: &[IssuedToken]) -> String {
    match output {
        Output::Lines => table(
            &["HOSTNAME", "ENROLL COMMAND"],
            hosts
                .iter()
                .map(|h| vec![h.hostname.clone(), h.enroll_command.clone()])
                .collect(),
        ),
        Output::Csv => {
            let mut out = String::from("hostname,line,token,enroll_command\n");
            for h in hosts {
                let cells = [
                    h.hostname.clone(),
                    h.line.to_string(),
                    h.token.clone(),
                    h.enroll_command.clone(),
                ];
                let cells: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
                out.push_str(&cells.join(","));
                out.push('\n');
            }
            out
        }
        Output::CloudInit => hosts
            .iter()
            .map(|h| cloud_init(server, pin, h))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A cloud-init user-data document enrolling one host on first boot. Every
/// value is a JSON string, which YAML reads as a double-quoted scalar.
pub fn cloud_init(server: &str, pin: &str, host: &IssuedToken) -> String {
    let q = |s: &str| Value::from(s).to_string();
    format!(
        "#cloud-config\n# Muster: enrolls {hostname} (batch row on line {line}). The token is one-time and secret.\n\
         runcmd:\n  - [{enroll}, {sub}, \"--server\", {server}, \"--token\", {token}, \"--pin\", {pin}]\n  \
         - [\"systemctl\", \"enable\", \"--now\", \"muster-agent\"]\n",
        hostname = host.hostname,
        line = host.line,
        enroll = q("muster-agent"),
        sub = q("enroll"),
        server = q(server),
        token = q(&host.token),
        pin = q(pin),
    )
}

/// `batch list`.
pub async fn list(args: &AdminArgs) -> Result<()> {
    let batches: Vec<BatchRecord> = AdminClient::new(args)?.get("/v1/admin/batches").await?;
    if args.json {
        return print_json(&batches);
    }
    let rows = batches
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                b.name.clone(),
                b.hosts.to_string(),
                time(b.created_at),
                b.created_by.clone(),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "NAME", "HOSTS", "CREATED", "BY"], rows));
    Ok(())
}

/// A `[#####-----] 25/50` bar for the rows that reached the last step.
pub fn progress_bar(status: &BatchStatus, width: usize) -> String {
    let total = status.hosts.len().max(1);
    let last = if status.scrape_checks {
        HostState::ScrapeOk
    } else {
        HostState::ConfigApplied
    };
    let done = status.hosts.iter().filter(|h| h.state == last).count();
    let filled = done * width / total;
    let counts: Vec<String> = status
        .totals
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!(
        "[{}{}] {done}/{} {}  ({})",
        "#".repeat(filled),
        "-".repeat(width - filled),
        status.hosts.len(),
        last.as_str(),
        counts.join(", ")
    )
}

fn status_table(hosts: &[EntryStatus]) -> String {
    let rows = hosts
        .iter()
        .map(|h| {
            vec![
                h.line.to_string(),
                h.hostname.clone(),
                h.state.as_str().to_string(),
                h.host_id.clone().unwrap_or_else(|| "-".into()),
                if h.retryable {
                    format!("{} (batch retry)", h.problem.clone().unwrap_or_default())
                } else {
                    h.problem.clone().unwrap_or_else(|| "-".into())
                },
                labels_text(&h.labels),
            ]
        })
        .collect();
    table(
        &["LINE", "HOSTNAME", "STATE", "HOST", "PROBLEM", "LABELS"],
        rows,
    )
}

/// `batch status BATCH [--watch]`. With `--watch`, returns once every row has
/// settled; `Ok(false)` when some row failed.
pub async fn status(args: &AdminArgs, id: &str, watch: bool, every: Duration) -> Result<bool> {
    let client = AdminClient::new(args)?;
    let path = format!("/v1/admin/batches/{}", path_segment(id)?);
    let tty = std::io::stdout().is_terminal();
    let mut last_bar = String::new();
    loop {
        let status: BatchStatus = client.get(&path).await?;
        let settled = status.hosts.iter().all(|h| h.settled(status.scrape_checks));
        let failed = status.hosts.iter().any(|h| h.problem.is_some());
        if args.json {
            print_json(&status)?;
        } else if !watch || tty {
            if watch {
                // Clear the screen and redraw.
                print!("\x1b[2J\x1b[H");
            }
            println!(
                "Batch {} ({:?}), created {} by {}",
                status.batch.id,
                status.batch.name,
                time(status.batch.created_at),
                status.batch.created_by
            );
            print!("{}", status_table(&status.hosts));
            println!("{}", progress_bar(&status, 30));
        } else {
            let bar = progress_bar(&status, 30);
            if bar != last_bar {
                println!("{bar}");
                last_bar = bar;
            }
        }
        if !watch {
            return Ok(true);
        }
        if settled {
            if !args.json && !tty && failed {
                print!("{}", status_table(&status.hosts));
            }
            return Ok(!failed);
        }
        tokio::time::sleep(every).await;
    }
}

/// `batch retry BATCH [--host H]`.
pub async fn retry(
    args: &AdminArgs,
    id: &str,
    host: Option<String>,
    ttl: Option<Duration>,
    output: Output,
) -> Result<()> {
    let path = format!("/v1/admin/batches/{}/retry", path_segment(id)?);
    let req = BatchRetry {
        host,
        ttl_secs: ttl.map(|d| d.as_secs()),
    };
    let done: BatchRetried = AdminClient::new(args)?.post(&path, &req).await?;
    if args.json {
        return print_json(&done);
    }
    if done.hosts.is_empty() {
        println!(
            "Nothing to retry in batch {}: no row failed to enroll and no token expired.",
            done.batch.id
        );
        return Ok(());
    }
    if output == Output::Lines {
        println!(
            "New one-time tokens for {} host(s) of batch {} (the old ones are revoked). Shown only now:",
            done.hosts.len(),
            done.batch.id
        );
    }
    print!("{}", render(output, &done.server, &done.pin, &done.hosts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> IssuedToken {
        IssuedToken {
            line: 2,
            hostname: "web-01".into(),
            token: "mte_abc_def".into(),
            enroll_command:
                "muster-agent enroll --server https://m:8443 --token mte_abc_def --pin sha256//x+/="
                    .into(),
        }
    }

    #[test]
    fn cloud_init_quotes_every_value() {
        let text = cloud_init("https://m:8443", "sha256//x+/=", &token());
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        assert!(
            text.contains(r#"["muster-agent", "enroll", "--server", "https://m:8443", "--token", "mte_abc_def", "--pin", "sha256//x+/="]"#),
            "{text}"
        );
    }

    #[test]
    fn csv_output_has_a_header_and_quotes_when_needed() {
        let mut t = token();
        t.hostname = "a,b".into();
        let text = render(Output::Csv, "s", "p", &[t]);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("hostname,line,token,enroll_command"));
        assert!(lines
            .next()
            .expect("row")
            .starts_with("\"a,b\",2,mte_abc_def,"));
    }
}
