//! Enrollment (and renewal, agent and admin authentication) cost must not
//! grow with the fleet: every statement these transitions run is recorded,
//! and SQLite's plan for each must find its rows through an index, never by
//! reading all of `hosts`, `certs` or `audit`.

use super::tests::{Machine, World, NOW};

/// The tables whose full scan would make a transition cost grow with the
/// fleet or its history.
const BIG_TABLES: [&str; 4] = ["hosts", "certs", "audit", "enrollments"];

/// Plan lines that read a whole big table (a `SCAN` of the table, or of
/// one of its indexes, which is as long).
fn full_scans(plan: &[String]) -> Vec<String> {
    plan.iter()
        .filter(|line| {
            BIG_TABLES.iter().any(|table| {
                line.starts_with(&format!("SCAN {table}"))
                    || line.starts_with(&format!("SCAN TABLE {table}"))
            })
        })
        .cloned()
        .collect()
}

#[test]
fn every_enrollment_renewal_and_authentication_query_uses_an_index() {
    let w = World::new();
    // Some fleet, so the plans are those of a populated database.
    for i in 0..20 {
        Machine::new(&format!("filler-{i}"), &format!("m-filler-{i}"))
            .enroll(&w, &w.token(&[], 1), &format!("key-filler-{i}"), &[])
            .expect("filler enrolled");
    }
    let m = Machine::new("web-01", "m-web");
    let token = w.token(&[("env", "prod")], 2);
    let ((), statements) = w.store.traced(|| {
        // New host, replay, again with another token, a refused other key,
        // decommission and return (the previous-host lookup), replacement.
        let first = m.enroll(&w, &token, "key-00001", &[]).expect("new");
        m.enroll(&w, &token, "key-00001", &[]).expect("replay");
        let again = m
            .enroll(&w, &w.token(&[], 1), "key-00002", &[])
            .expect("again");
        let other = Machine::new("web-01", "m-web");
        assert!(other
            .enroll(&w, &w.token(&[], 1), "key-00003", &[])
            .is_err());
        let fleet = w.fleet();
        let cert = fleet
            .authenticate(&again.cert.fingerprint, NOW)
            .expect("authenticated");
        let (_, renewed) = fleet
            .renew(&cert.fingerprint, &m.csr(), "10.0.0.5", cert.not_after - 1)
            .expect("renewed");
        fleet
            .authenticate(&renewed.fingerprint, cert.not_after - 1)
            .expect("renewal in use");
        fleet
            .decommission(&first.host.id, "admin", "127.0.0.1", NOW)
            .expect("decommissioned");
        let back = m
            .enroll(&w, &w.token(&[], 1), "key-00004", &[])
            .expect("back as a new host");
        let replacement = fleet
            .replace(&back.host.id, "admin", "127.0.0.1", NOW)
            .expect("replace");
        Machine::new("web-01", "m-web")
            .enroll(&w, replacement.token.expose(), "key-00005", &[])
            .expect("taken over");
        let admin = w.store.create_admin_token("ops", NOW).expect("admin token");
        assert!(w
            .store
            .verify_admin_token(admin.expose())
            .expect("verify")
            .is_some());
    });
    assert!(
        statements
            .iter()
            .any(|s| s.contains("decommissioned_at IS NOT NULL")),
        "the previous-host lookup ran: {statements:#?}"
    );
    assert!(statements.len() > 10, "{statements:#?}");
    let mut scans = Vec::new();
    for sql in &statements {
        let plan = w.store.query_plan(sql);
        let bad = full_scans(&plan);
        if !bad.is_empty() {
            scans.push(format!("{sql}\n  -> {bad:?}"));
        }
    }
    assert!(
        scans.is_empty(),
        "full table scans on the enrollment path:\n{}",
        scans.join("\n")
    );
}
