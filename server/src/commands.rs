//! What each `muster-server` command does, given its parsed arguments
//! (`args`): offline commands run here, admin commands through the `cli`
//! client. `serve` is wired in `main.rs`.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use muster_shared::labels::{self, Labels};

use crate::args::{
    BatchCommand, Command, HostsCommand, LabelsCommand, TargetsCommand, TokenCommand,
};
use crate::machine::Machine;
use crate::{cli, init, settings};

/// Exit code for a bad command line or configuration (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// An error with the exit code it deserves.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        // Not knowing where the admin API is: the command line or the
        // environment is incomplete.
        let code = if error.downcast_ref::<cli::NoAdminApi>().is_some() {
            EXIT_USAGE
        } else {
            1
        };
        Failure { code, error }
    }
}

/// A bad command line or configuration.
pub fn usage(error: anyhow::Error) -> Failure {
    Failure {
        code: EXIT_USAGE,
        error,
    }
}

/// Runs every command but `serve` (which `main.rs` wires: it binds
/// listeners and waits for signals).
pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Init(args) => {
            let done = init::init(
                &args.data_dir,
                &args.sans,
                args.public_url,
                &Machine::discover(),
                SystemTime::now(),
            )
            .with_context(|| format!("initialising {}", args.data_dir.display()))
            .map_err(usage)?;
            print_initialized(&args.data_dir, &done);
            Ok(())
        }
        Command::Serve(_) => unreachable!("main.rs runs serve"),
        Command::Render(args) => {
            let preview = crate::preview::render(&args)?;
            print!("{}", preview.text(args.json));
            Ok(())
        }
        Command::Alloy(crate::preview::AlloyCommand::Check { files }) => {
            let errors = crate::preview::check_files(&files, &mut std::io::stdout())
                .context("writing to stdout")?;
            if errors > 0 {
                return Err(anyhow::anyhow!("{errors} syntax error(s)").into());
            }
            Ok(())
        }
        Command::Targets(TargetsCommand::Sync { data_dir, check }) => {
            let differences = targets_sync(&data_dir, check)?;
            if check && differences > 0 {
                return Err(Failure {
                    code: 1,
                    error: anyhow::anyhow!(
                        "{differences} target file(s) differ from the database; `muster-server targets sync` repairs them"
                    ),
                });
            }
            Ok(())
        }
        Command::Token(cmd) => client(|| async move {
            match cmd {
                TokenCommand::Create {
                    labels,
                    ttl,
                    uses,
                    admin,
                } => {
                    let labels: Labels = labels.into_iter().collect();
                    cli::token_create(&admin, labels, ttl, Some(uses)).await
                }
                TokenCommand::CreateReader { name, admin } => {
                    cli::token_create_reader(&admin, &name).await
                }
                TokenCommand::List { admin } => cli::token_list(&admin).await,
                TokenCommand::Revoke { id, admin } => cli::token_revoke(&admin, &id).await,
                TokenCommand::ListReaders { admin } => cli::token_list_readers(&admin).await,
                TokenCommand::RevokeReader { id, admin } => {
                    cli::token_revoke_reader(&admin, &id).await
                }
            }
        }),
        Command::Hosts(HostsCommand::Label {
            args,
            selector,
            remove,
            admin,
        }) => {
            let (target, pairs) = label_target(args, selector).map_err(usage)?;
            let set = pairs
                .iter()
                .map(|p| labels::parse_pair(p))
                .collect::<Result<Labels, _>>()
                .map_err(|e| usage(e.into()))?;
            client(|| async move { cli::hosts_label(&admin, target, set, remove).await })
        }
        Command::Hosts(HostsCommand::Decommission { id, yes, admin }) => {
            confirm(&id, yes).map_err(usage)?;
            client(|| async move { cli::hosts_decommission(&admin, &id).await })
        }
        Command::Hosts(cmd) => client(|| async move {
            match cmd {
                HostsCommand::List {
                    selector,
                    state,
                    all,
                    admin,
                } => {
                    let filter = cli::HostFilter {
                        selector,
                        state,
                        all,
                    };
                    cli::hosts_list(&admin, &filter).await
                }
                HostsCommand::Show { id, admin } => cli::hosts_show(&admin, &id).await,
                HostsCommand::Replace { id, admin } => cli::hosts_replace(&admin, &id).await,
                HostsCommand::Label { .. } | HostsCommand::Decommission { .. } => {
                    unreachable!("handled above")
                }
            }
        }),
        Command::Labels(LabelsCommand::Check { admin }) => {
            let fits = runtime()?.block_on(cli::labels_check(&admin))?;
            if fits {
                Ok(())
            } else {
                Err(Failure {
                    code: 1,
                    error: anyhow::anyhow!("some hosts do not fit the label schema"),
                })
            }
        }
        Command::Batch(BatchCommand::Status {
            id,
            watch,
            interval,
            admin,
        }) => {
            let ok = runtime()?.block_on(cli::batch::status(&admin, &id, watch, interval))?;
            if ok {
                Ok(())
            } else {
                Err(Failure {
                    code: 1,
                    error: anyhow::anyhow!(
                        "some hosts of batch {id} failed; see the PROBLEM column"
                    ),
                })
            }
        }
        Command::Batch(cmd) => client(|| async move {
            match cmd {
                BatchCommand::Import {
                    file,
                    input,
                    skip_invalid,
                    ttl,
                    format,
                    admin,
                } => cli::batch::import(&admin, &file, input, skip_invalid, ttl, format).await,
                BatchCommand::List { admin } => cli::batch::list(&admin).await,
                BatchCommand::Retry {
                    id,
                    host,
                    ttl,
                    format,
                    admin,
                } => cli::batch::retry(&admin, &id, host, ttl, format).await,
                BatchCommand::Status { .. } => unreachable!("handled above"),
            }
        }),
        Command::Audit {
            host,
            actor,
            since,
            limit,
            admin,
        } => {
            let since = since
                .map(|s| cli::parse_since(&s, SystemTime::now()))
                .transpose()
                .map_err(|e| usage(anyhow::anyhow!(e)))?;
            client(|| async move {
                cli::audit(&admin, host.as_deref(), actor.as_deref(), since, limit).await
            })
        }
    }
}

/// `hosts label`'s positionals: a host id then pairs, or (with a selector)
/// only pairs.
fn label_target(
    args: Vec<String>,
    selector: Option<String>,
) -> Result<(cli::LabelTarget, Vec<String>)> {
    match selector {
        Some(s) => {
            if let Some(id) = args.iter().find(|a| !a.contains('=')) {
                anyhow::bail!("{id:?} is not NAME=VALUE; with --selector, give no host id");
            }
            Ok((cli::LabelTarget::Selector(s), args))
        }
        None => {
            let mut args = args.into_iter();
            match args.next() {
                Some(id) if !id.contains('=') => Ok((cli::LabelTarget::Host(id), args.collect())),
                _ => anyhow::bail!(
                    "give a host id first (hosts label ID NAME=VALUE...), or --selector NAME=VALUE"
                ),
            }
        }
    }
}

/// Decommissioning cannot be undone: ask, unless --yes.
fn confirm(id: &str, yes: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("decommissioning {id} cannot be undone: pass --yes to confirm");
    }
    print!("Decommission {id}? Its agent is cut off and its target file retired. Type the host id to confirm: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != id {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

pub fn print_initialized(dir: &Path, done: &init::Initialized) {
    println!("Initialised Muster data dir {}", dir.display());
    println!("  server public-key pin: {}", done.pin);
    println!(
        "  admin token (shown once; also saved in {}, mode 0600): {}",
        dir.join(init::ADMIN_TOKEN_FILE).display(),
        done.admin_token.expose()
    );
    println!(
        "  agents will reach the server at {} (public_url in {}; `serve --public-url` overrides it)",
        done.public_url,
        dir.join(settings::FILE_NAME).display()
    );
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn client<F, Fut>(f: F) -> Result<(), Failure>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    runtime()?.block_on(f())?;
    Ok(())
}

/// `targets sync [--check]`: lists every difference between the targets
/// dir and the database and (without `check`) repairs it; how many there
/// were. Hosts are read a page at a time, and the directory is fsynced
/// once per page of repairs. Safe while the server runs: writes go through
/// unique temp files, and a temp file of a live process is left alone.
fn targets_sync(data_dir: &Path, check: bool) -> Result<usize, Failure> {
    use crate::reconciler;
    let settings = crate::settings::Settings::read(&data_dir.join(crate::settings::FILE_NAME))
        .context("reading settings")
        .map_err(usage)?;
    let dir = settings
        .targets_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("targets"));
    let store = crate::store::Store::open(&data_dir.join(crate::store::FILE_NAME))
        .context("opening the database")?;
    let reading = || format!("reading {}", dir.display());
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store
            .hosts_page(after.as_deref(), reconciler::PAGE)
            .context("reading hosts")?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let mut repaired = false;
        for host in &page {
            let Some(d) = reconciler::difference(&dir, host).with_context(reading)? else {
                continue;
            };
            println!("{d}");
            count += 1;
            if !check {
                reconciler::sync_file(&dir, host)
                    .with_context(|| format!("syncing the target file of {}", host.id))?;
                repaired = true;
            }
        }
        if repaired {
            crate::targets::sync_dir(&dir).with_context(|| format!("syncing {}", dir.display()))?;
        }
    }
    for name in reconciler::temp_files(&dir).with_context(reading)? {
        println!("temp file {name}");
        count += 1;
        if !check && !reconciler::temp_of_live_process(&name) {
            std::fs::remove_file(dir.join(&name)).with_context(|| format!("removing {name}"))?;
        }
    }
    let what = if check { "differ" } else { "repaired" };
    println!("{count} target file(s) {what} in {}", dir.display());
    Ok(count)
}
