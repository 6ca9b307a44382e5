//! The README documents what a user must set: every variable the configuration reads (found by
//! recording the lookups of a fully featured configuration) appears in its tables.

use std::sync::Mutex;

use common::config::Config;
use wxim_tests::{repo_root, sample};

#[test]
fn the_readme_documents_every_configuration_variable() {
    let mut vars = sample::vars();
    // Switch on what the sample leaves off, so that every branch reads its variables.
    for (k, v) in [
        ("TABLE_NAME", "wxim"),
        ("NOTIFY_QUIET_HOURS", "22:00-08:00"),
        ("WXIM_ADMIN_TOKEN", "t"),
    ] {
        vars.push((k.into(), v.into()));
    }
    let read = Mutex::new(Vec::<String>::new());
    Config::from_lookup(&|k| {
        read.lock().unwrap().push(k.to_owned());
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .expect("the configuration is valid");
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut read = read.into_inner().unwrap();
    read.sort();
    read.dedup();
    assert!(read.len() > 40, "only {} variables were read", read.len());
    let missing: Vec<&String> = read
        .iter()
        .filter(|v| !readme.contains(&format!("`{v}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not document {missing:?}"
    );
}
