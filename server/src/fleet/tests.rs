//! The enrollment policy without HTTP: a temp database, a real CA, the
//! built-in templates, explicit times.

use muster_shared::facts::Facts;
use muster_shared::labels::Labels;

use super::*;
use crate::render::RenderSettings;
use crate::store::NewBatchHost;

pub(super) const NOW: i64 = 1_800_000_000;

pub(super) struct World {
    _dir: tempfile::TempDir,
    pub(super) store: Store,
    ca: Ca,
    templates: Templates,
    render: RenderSettings,
    settings: Settings,
    index: std::sync::Arc<PollIndex>,
}

impl World {
    pub(super) fn new() -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::create(dir.path(), at(NOW)).expect("ca");
        World {
            store: Store::open(&dir.path().join("muster.db")).expect("store"),
            ca,
            templates: Templates::builtin().expect("templates"),
            render: RenderSettings {
                loki_url: None,
                otlp_endpoint: None,
                overrides: Default::default(),
            },
            settings: Settings::from_toml("public_url = \"https://x\"").expect("settings"),
            index: Default::default(),
            _dir: dir,
        }
    }

    pub(super) fn fleet(&self) -> Fleet<'_> {
        Fleet {
            store: &self.store,
            ca: &self.ca,
            templates: &self.templates,
            render: &self.render,
            settings: &self.settings,
            index: &self.index,
        }
    }

    pub(super) fn token(&self, labels: &[(&str, &str)], uses: u32) -> String {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (secret, _) = self
            .store
            .write(|tx| tx.create_enroll_token(&labels, NOW + 3600, uses, "test", NOW))
            .expect("token");
        secret.expose().to_string()
    }
}

pub(super) struct Machine {
    key: rcgen::KeyPair,
    facts: Facts,
}

impl Machine {
    pub(super) fn new(hostname: &str, machine_id: &str) -> Machine {
        Machine {
            key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key"),
            facts: Facts {
                hostname: hostname.into(),
                machine_id: machine_id.into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                scrape_address: "10.0.0.5:12345".into(),
                agent_version: "0.1.0".into(),
                ..Facts::default()
            },
        }
    }

    pub(super) fn csr(&self) -> String {
        rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .serialize_request(&self.key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    pub(super) fn enroll(
        &self,
        w: &World,
        token: &str,
        key: &str,
        requested: &[(&str, &str)],
    ) -> Result<Enrolled, FleetError> {
        let requested: Labels = requested
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        w.fleet().enroll(&EnrollAttempt {
            token,
            facts: &self.facts,
            csr_pem: &self.csr(),
            idempotency_key: key,
            requested_labels: &requested,
            source: "10.0.0.5",
            now: NOW,
        })
    }
}

#[test]
fn a_new_machine_becomes_a_host_with_token_labels_over_requested_ones() {
    let w = World::new();
    let token = w.token(&[("env", "production")], 1);
    let m = Machine::new("web-01", "m-1");
    let done = m
        .enroll(&w, &token, "key-00001", &[("env", "dev"), ("team", "web")])
        .expect("enrolled");
    assert_eq!(done.what, Enrollment::New { previous: None });
    let labels = &done.host.operator_labels;
    assert_eq!(labels["env"], "production");
    assert_eq!(labels["team"], "web");
    // The token is spent; the audit entry was written with the host.
    let again = Machine::new("web-02", "m-2").enroll(&w, &token, "key-00002", &[]);
    assert!(
        matches!(again, Err(FleetError::Token("exhausted"))),
        "{again:?}"
    );
    let audit = w
        .store
        .audit_query(&crate::store::AuditFilter {
            host: Some(done.host.id.clone()),
            actor: None,
            since: None,
            limit: 10,
        })
        .expect("audit");
    assert!(audit
        .iter()
        .any(|a| a.action == "enroll" && a.outcome == "accepted"));
}

#[test]
fn a_replay_is_the_same_host_and_spends_nothing_but_only_for_the_same_machine_and_key() {
    let w = World::new();
    let token = w.token(&[], 1);
    let m = Machine::new("web-01", "m-1");
    let first = m.enroll(&w, &token, "key-00001", &[]).expect("enrolled");
    let again = m.enroll(&w, &token, "key-00001", &[]).expect("replayed");
    assert_eq!(again.host.id, first.host.id);
    assert_eq!(again.what, Enrollment::Again);
    let thief = Machine::new("thief", "m-9");
    let stolen = thief.enroll(&w, &token, "key-00001", &[]);
    assert!(
        matches!(stolen, Err(FleetError::ReplayMismatch { .. })),
        "{stolen:?}"
    );
    let rekeyed = Machine::new("web-01", "m-1").enroll(&w, &token, "key-00001", &[]);
    assert!(
        matches!(rekeyed, Err(FleetError::ReplayMismatch { .. })),
        "{rekeyed:?}"
    );
}

#[test]
fn another_key_for_an_enrolled_machine_needs_the_hosts_replacement_token() {
    let w = World::new();
    let m = Machine::new("db-01", "m-db");
    let first = m
        .enroll(&w, &w.token(&[("team", "db")], 1), "key-00001", &[])
        .expect("enrolled");
    let reinstall = Machine::new("db-01", "m-db");
    let refused = reinstall.enroll(&w, &w.token(&[("team", "evil")], 1), "key-00002", &[]);
    assert!(
        matches!(refused, Err(FleetError::MachineConflict { .. })),
        "{refused:?}"
    );

    let replacement = w
        .fleet()
        .replace(&first.host.id, "admin", "127.0.0.1", NOW)
        .expect("replace");
    let token = replacement.token.expose().to_string();
    let elsewhere = Machine::new("other", "m-other").enroll(&w, &token, "key-00003", &[]);
    assert!(
        matches!(elsewhere, Err(FleetError::ReplacementMismatch { .. })),
        "{elsewhere:?}"
    );
    let taken = reinstall
        .enroll(&w, &token, "key-00004", &[])
        .expect("taken over");
    assert_eq!(taken.what, Enrollment::Replaced);
    assert_eq!(taken.host.id, first.host.id);
    assert_eq!(taken.host.operator_labels["team"], "db");
    assert_eq!(taken.host.lifecycle.replace_until, None);
}

#[test]
fn a_batch_token_enrolls_its_hostname_only_and_binds_its_row() {
    let w = World::new();
    let row = NewBatchHost {
        line: 2,
        hostname: "web-07.example.com".into(),
        labels: Labels::new(),
        address: None,
    };
    let (batch, secrets) = w
        .store
        .write(|tx| tx.create_batch("b", &[row], NOW + 3600, "admin", NOW))
        .expect("batch");
    let token = secrets[0].expose().to_string();
    let wrong = Machine::new("web-08", "m-8").enroll(&w, &token, "key-00001", &[]);
    assert!(
        matches!(wrong, Err(FleetError::HostnameMismatch { .. })),
        "{wrong:?}"
    );
    let right = Machine::new("web-07", "m-7")
        .enroll(&w, &token, "key-00002", &[])
        .expect("enrolled");
    assert_eq!(
        right.host.lifecycle.batch_id.as_deref(),
        Some(batch.id.as_str())
    );
    let entries = w.store.batch_entries(&batch.id, NOW).expect("entries");
    assert_eq!(
        entries[0].host.as_ref().map(|h| h.id.clone()),
        Some(right.host.id)
    );
}

#[test]
fn a_decommissioned_machine_comes_back_as_a_new_linked_host() {
    let w = World::new();
    let m = Machine::new("app-01", "m-app");
    let first = m
        .enroll(&w, &w.token(&[], 1), "key-00001", &[])
        .expect("enrolled");
    w.fleet()
        .decommission(&first.host.id, "admin", "127.0.0.1", NOW)
        .expect("decommissioned");
    let back = m
        .enroll(&w, &w.token(&[], 1), "key-00002", &[])
        .expect("enrolled again");
    assert_ne!(back.host.id, first.host.id);
    assert_eq!(
        back.what,
        Enrollment::New {
            previous: Some(first.host.id)
        }
    );
}

fn csv(content: &str) -> BatchFile<'_> {
    BatchFile {
        name: "racks.csv",
        format: None,
        content,
        skip_invalid: false,
    }
}

#[test]
fn a_batch_import_refuses_every_row_when_one_is_bad_unless_told_to_skip() {
    let w = World::new();
    let content = "hostname,team\nweb-01,web\nnot a hostname,web\nweb-01,db\n";
    let refused = w
        .fleet()
        .import_batch(&csv(content), NOW + 3600, "admin", "127.0.0.1", NOW);
    let Err(FleetError::InvalidRows { summary, rows }) = refused else {
        panic!("{refused:?}");
    };
    assert!(summary.starts_with("2 of 3 rows are invalid"), "{summary}");
    assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [3, 4]);
    assert!(w.store.batches().expect("batches").is_empty());

    let file = BatchFile {
        skip_invalid: true,
        ..csv(content)
    };
    let imported = w
        .fleet()
        .import_batch(&file, NOW + 3600, "admin", "127.0.0.1", NOW)
        .expect("imported");
    assert_eq!(imported.tokens.len(), 1);
    assert_eq!(imported.tokens[0].hostname, "web-01");
    assert_eq!(imported.tokens[0].line, 2);
    assert_eq!(imported.invalid.len(), 2);
    let audit = w
        .store
        .audit_query(&crate::store::AuditFilter {
            host: None,
            actor: None,
            since: None,
            limit: 10,
        })
        .expect("audit");
    assert!(
        audit.iter().any(|a| a.action == "batch.import"
            && a.target.as_deref() == Some(imported.batch.id.as_str())),
        "{audit:?}"
    );

    // A second import cannot take a hostname the first one holds.
    let again = w.fleet().import_batch(
        &csv("hostname\nWEB-01\n"),
        NOW + 3600,
        "admin",
        "127.0.0.1",
        NOW,
    );
    let Err(FleetError::InvalidRows { rows, .. }) = again else {
        panic!("{again:?}");
    };
    assert!(
        rows[0]
            .message
            .contains(&format!("pending in batch {}", imported.batch.id)),
        "{rows:?}"
    );
}

#[test]
fn a_batch_retry_reissues_only_rows_that_failed_or_expired() {
    let w = World::new();
    let imported = w
        .fleet()
        .import_batch(
            &csv("hostname\nweb-01\nweb-02\n"),
            NOW + 60,
            "admin",
            "127.0.0.1",
            NOW,
        )
        .expect("imported");
    let id = imported.batch.id.clone();
    Machine::new("web-01", "m-1")
        .enroll(&w, imported.tokens[0].token.expose(), "key-00001", &[])
        .expect("enrolled");

    // Before the tokens expire nothing is retryable.
    let early = w
        .fleet()
        .retry_batch(&id, Some("web-02"), NOW + 3600, "admin", "127.0.0.1", NOW);
    assert!(
        matches!(
            &early,
            Err(FleetError::NotRetryable {
                valid_token: true,
                ..
            })
        ),
        "{early:?}"
    );
    let unknown = w
        .fleet()
        .retry_batch(&id, Some("web-09"), NOW + 3600, "admin", "127.0.0.1", NOW);
    assert!(
        matches!(unknown, Err(FleetError::NotFound(_))),
        "{unknown:?}"
    );

    let later = NOW + 120;
    let retried = w
        .fleet()
        .retry_batch(&id, None, later + 3600, "admin", "127.0.0.1", later)
        .expect("retried");
    let names: Vec<_> = retried.tokens.iter().map(|t| t.hostname.as_str()).collect();
    assert_eq!(names, ["web-02"]);
    assert_eq!(retried.tokens[0].line, 3);
    let status = w.fleet().batch_status(&id, later).expect("status");
    assert!(status.hosts.iter().all(|h| !h.retryable), "{status:?}");
    Machine::new("web-02", "m-2")
        .enroll(&w, retried.tokens[0].token.expose(), "key-00002", &[])
        .expect("the new token enrolls");
}
