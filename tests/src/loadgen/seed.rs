//! The fast way to grow a fleet's database: with the server stopped, copy
//! one host that enrolled over TLS into many, in one SQL statement per
//! table. Each copy has an id (`fleet-NNNNNN-seeded`), and the hostname, machine id and scrape address of
//! its own index (every text column has the template's values replaced)
//! and a certificate row of its own with a synthetic fingerprint (no
//! certificate exists for it: seeded hosts are counted, listed, loaded at
//! start-up and rendered, but never connect). Columns are read from the
//! schema, so steps added later are copied too. Their target files are
//! the template's with the same replacements (what the server would write),
//! so the next start has no file to write.

use std::path::Path;

use super::hosts::{hostname, machine_id, source_addr};

/// Copies host `template` (whose host id is `template_id`) into hosts
/// `first..first + count` in the database at `db` (the server must be
/// stopped).
pub fn seed_hosts(db: &Path, template: usize, template_id: &str, first: usize, count: usize) {
    if count == 0 {
        return;
    }
    let mut conn = rusqlite::Connection::open(db).expect("open the database");
    let tx = conn.transaction().expect("a transaction");
    let new_id = "printf('fleet-%06d-seeded', n.i)";
    let new_name = "printf('fleet-%06d', n.i)";
    // machine_id(i): 16 zero digits, f1ee7000, then i in 8 hex digits.
    let new_machine = "printf('0000000000000000f1ee7000%08x', n.i)";
    let new_addr = "printf('127.%d.%d.%d:', 1 + (n.i >> 16), (n.i >> 8) & 255, n.i & 255)";
    let rewrite = |col: &str| {
        format!(
            "replace(replace(replace(replace(h.{col}, ?2, {new_id}), ?6, {new_name}), ?3, {new_machine}), ?4, {new_addr})"
        )
    };
    let copy = |table: &str, key: &str, special: &dyn Fn(&str) -> Option<String>| {
        let columns: Vec<(String, String)> = tx
            .prepare(&format!(
                "SELECT name, type FROM pragma_table_info('{table}')"
            ))
            .expect("columns")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("columns")
            .collect::<Result<_, _>>()
            .expect("columns");
        let select: Vec<String> = columns
            .iter()
            .map(|(c, ty)| {
                special(c).unwrap_or_else(|| {
                    if ty.eq_ignore_ascii_case("TEXT") {
                        rewrite(c)
                    } else {
                        format!("h.{c}")
                    }
                })
            })
            .collect();
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let sql = format!(
            "WITH RECURSIVE n(i) AS (SELECT ?5 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO {table} ({}) SELECT {} FROM n,
             (SELECT * FROM {table} WHERE {key} = ?2 LIMIT 1) h",
            names.join(", "),
            select.join(", ")
        );
        let addr = format!("{}:", source_addr(template));
        let inserted = tx
            .execute(
                &sql,
                rusqlite::params![
                    (first + count - 1) as i64,
                    template_id,
                    machine_id(template),
                    addr,
                    first as i64,
                    hostname(template),
                ],
            )
            .unwrap_or_else(|e| panic!("seeding {table}: {e}\n{sql}"));
        assert_eq!(inserted, count, "rows seeded into {table}");
    };
    copy("hosts", "id", &|c| match c {
        "id" => Some(new_id.to_string()),
        "machine_id" => Some(new_machine.to_string()),
        _ => None,
    });
    copy("certs", "host_id", &|c| match c {
        "fingerprint" => Some("printf('%064x', n.i)".to_string()),
        "serial" => Some("printf('%032x', n.i)".to_string()),
        "host_id" => Some(new_id.to_string()),
        _ => None,
    });
    // The SQL spelling of a seeded identity is the Rust one.
    let (id, machine, facts): (String, String, String) = tx
        .query_row(
            "SELECT id, machine_id, facts FROM hosts WHERE id = ?1",
            [format!("fleet-{first:06}-seeded")],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the first seeded host");
    assert_eq!(machine, machine_id(first), "{id}");
    let scrape = format!("\"{}:12345\"", source_addr(first));
    assert!(
        facts.contains(&scrape) && facts.contains(&format!("\"{}\"", hostname(first))),
        "{id}: {facts}"
    );
    tx.commit().expect("commit the seeded hosts");
}

/// Writes `<targets>/<id>.json` for hosts `first..first + count`: the
/// template's file with its id, hostname, machine id and scrape address
/// replaced (no fsync: a benchmark's data dir). Nothing when the template
/// has no file.
pub fn seed_target_files(
    targets: &Path,
    template: usize,
    template_id: &str,
    first: usize,
    count: usize,
) {
    let Ok(text) = std::fs::read_to_string(targets.join(format!("{template_id}.json"))) else {
        return;
    };
    let addr = format!("{}:", source_addr(template));
    for i in first..first + count {
        let id = format!("fleet-{i:06}-seeded");
        let body = text
            .replace(template_id, &id)
            .replace(&hostname(template), &hostname(i))
            .replace(&machine_id(template), &machine_id(i))
            .replace(&addr, &format!("{}:", source_addr(i)));
        std::fs::write(targets.join(format!("{id}.json")), body).expect("seeded target file");
    }
}
