//! Tests of [`Registry`] against a real SQLite file in a temporary directory.

use std::path::PathBuf;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;

pub(super) fn t0() -> OffsetDateTime {
    datetime!(2025-03-01 08:00:00 UTC)
}

pub(super) fn face(model: &str, embedding: &[f32]) -> FaceTemplate {
    FaceTemplate {
        model_id: model.to_owned(),
        embedding: embedding.to_vec(),
        quality: 0.9,
        photo: None,
    }
}

pub(super) fn adult(id: &str) -> NewOwner {
    NewOwner {
        id: id.to_owned(),
        name: "张伟".to_owned(),
        building: Some("3".to_owned()),
        unit: Some("3-1-502".to_owned()),
        grid_code: None,
        minor_under_14: false,
    }
}

pub(super) fn consent() -> Consent {
    Consent::new(t0() - Duration::days(1), ConsentMethod::Written, "李保安")
}

/// A registry in a fresh file; keep the `TempDir` alive while using it.
pub(super) fn file_registry() -> (tempfile::TempDir, Registry, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.sqlite");
    let registry = Registry::open(&path).expect("open registry");
    (dir, registry, path)
}

const M: &str = "arcface-r100";

fn count(registry: &Registry, sql: &str) -> i64 {
    registry
        .conn
        .query_row(sql, [], |row| row.get(0))
        .expect("count query")
}

fn enrol(registry: &mut Registry, id: &str, embedding: &[f32]) -> Vec<i64> {
    registry
        .enroll(&adult(id), &consent(), &[face(M, embedding)], "staff", t0())
        .expect("enrol")
}

fn active_ids(registry: &Registry, now: OffsetDateTime) -> Vec<SubjectKey> {
    let mut keys: Vec<SubjectKey> = registry
        .active_templates(now)
        .expect("active templates")
        .iter()
        .map(|t| t.subject.key())
        .collect();
    keys.dedup();
    keys
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn open_sets_wal_foreign_keys_secure_delete_and_private_permissions() {
    let (_dir, registry, path) = file_registry();
    let mode: String = registry
        .conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let fk: bool = registry
        .conn
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .expect("foreign_keys");
    assert!(fk);
    let secure: i64 = registry
        .conn
        .pragma_query_value(None, "secure_delete", |row| row.get(0))
        .expect("secure_delete");
    assert_eq!(secure, 1);
    assert_eq!(
        registry.schema_version().expect("version"),
        schema::known_version()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn reopening_keeps_data_and_does_not_migrate_again() {
    let (_dir, mut registry, path) = file_registry();
    enrol(&mut registry, "A-101", &[1.0, 0.0]);
    drop(registry);
    let registry = Registry::open(&path).expect("second open");
    assert_eq!(
        registry.schema_version().expect("version"),
        schema::known_version()
    );
    assert_eq!(registry.owner("A-101").expect("owner").owner.id, "A-101");
}

#[test]
fn newer_schema_is_refused_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("future.sqlite");
    let conn = Connection::open(&path).expect("create");
    conn.pragma_update(None, "user_version", 7)
        .expect("set version");
    drop(conn);
    let err = Registry::open(&path).expect_err("must refuse");
    assert_eq!(
        err.to_string(),
        format!(
            "database schema version 7 is newer than this facegate (knows {}); upgrade facegate",
            schema::known_version()
        )
    );
}

#[test]
fn missing_directory_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-dir").join("registry.sqlite");
    let err = Registry::open(&path).expect_err("must refuse");
    assert!(matches!(
        err,
        RegistryError::Db(crate::db::DbError::MissingDirectory { .. })
    ));
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(
        !path.parent().expect("parent").exists(),
        "must not create it"
    );
}

#[test]
fn enrolment_round_trips() {
    let (_dir, mut registry, _) = file_registry();
    let embedding = [0.25, -0.5, 0.125, 1.0];
    let ids = registry
        .enroll(
            &adult("A-101"),
            &consent(),
            &[face(M, &embedding)],
            "前台小王",
            t0(),
        )
        .expect("enrol");
    assert_eq!(ids.len(), 1);

    let record = registry.owner("A-101").expect("owner");
    assert_eq!(record.owner.name, "张伟");
    assert_eq!(record.owner.unit.as_deref(), Some("3-1-502"));
    assert_eq!(record.owner.status, OwnerStatus::Active);
    assert_eq!(record.owner.created_at, t0());
    assert_eq!(record.consents.len(), 1);
    let c = &record.consents[0];
    assert_eq!(c.method, ConsentMethod::Written);
    assert_eq!(c.taken_by, "李保安");
    assert_eq!(c.purpose, "estate access by face");
    assert_eq!(c.given_at, t0() - Duration::days(1));
    assert_eq!(c.withdrawn_at, None);
    assert_eq!(record.template_count(), 1);
    assert_eq!(record.templates[0].id, ids[0]);
    assert_eq!(record.templates[0].model_id, M);
    assert_eq!(record.templates[0].dim, 4);
    assert!(!record.templates[0].has_photo);

    let active = registry.active_templates(t0()).expect("active");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].template_id, ids[0]);
    assert_eq!(active[0].embedding, embedding);
    assert_eq!(
        active[0].subject,
        Subject::Owner {
            id: "A-101".into(),
            name: "张伟".into()
        }
    );

    let audit = registry.audit(10).expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "owner.enroll");
    assert_eq!(audit[0].actor, "前台小王");
    assert_eq!(audit[0].subject, "A-101");
    assert_eq!(audit[0].ts, t0());
    let detail = audit[0].detail.as_ref().expect("detail");
    assert_eq!(detail["templates"], json!(ids));
    assert_eq!(detail["consent_method"], "written");
}

#[test]
fn enrolment_is_atomic_when_a_face_in_the_middle_is_wrong() {
    let (_dir, mut registry, _) = file_registry();
    let faces = [
        face(M, &[1.0, 0.0, 0.0, 0.0]),
        face(M, &[1.0, 0.0, 0.0]), // wrong dimension for the model
        face(M, &[0.0, 1.0, 0.0, 0.0]),
    ];
    let err = registry
        .enroll(&adult("A-101"), &consent(), &faces, "staff", t0())
        .expect_err("dimension mismatch");
    assert!(
        matches!(&err, RegistryError::Invalid(m) if m.starts_with("face 2:")),
        "{err}"
    );
    assert!(matches!(
        registry.owner("A-101"),
        Err(RegistryError::UnknownOwner(_))
    ));
    assert_eq!(count(&registry, "SELECT count(*) FROM owners"), 0);
    assert_eq!(count(&registry, "SELECT count(*) FROM consents"), 0);
    assert_eq!(count(&registry, "SELECT count(*) FROM templates"), 0);
    assert_eq!(count(&registry, "SELECT count(*) FROM audit"), 0);
}

#[test]
fn dimension_must_agree_with_stored_templates_of_the_same_model() {
    let (_dir, mut registry, _) = file_registry();
    enrol(&mut registry, "A-101", &[1.0, 0.0, 0.0, 0.0]);
    let err = registry
        .add_faces("A-101", &[face(M, &[1.0, 0.0])], "staff", t0())
        .expect_err("dim 2 vs 4");
    assert!(err.to_string().contains("have 4"), "{err}");
    registry
        .add_faces("A-101", &[face("other-model", &[1.0, 0.0])], "staff", t0())
        .expect("another model may have another size");
    assert_eq!(
        registry.foreign_templates(M).expect("foreign"),
        vec![("other-model".to_owned(), 1)]
    );
    assert!(
        registry
            .foreign_templates("other-model")
            .expect("foreign")
            .contains(&(M.to_owned(), 1))
    );
}

#[test]
fn enrolling_a_taken_id_is_refused() {
    let (_dir, mut registry, _) = file_registry();
    enrol(&mut registry, "A-101", &[1.0, 0.0]);
    let err = registry
        .enroll(
            &adult("A-101"),
            &consent(),
            &[face(M, &[0.0, 1.0])],
            "staff",
            t0(),
        )
        .expect_err("taken");
    assert!(matches!(err, RegistryError::OwnerExists(ref id) if id == "A-101"));
    assert_eq!(count(&registry, "SELECT count(*) FROM templates"), 1);
    assert_eq!(count(&registry, "SELECT count(*) FROM consents"), 1);
}

#[test]
fn a_minor_needs_a_guardian_on_the_consent() {
    let (_dir, mut registry, _) = file_registry();
    let child = NewOwner {
        minor_under_14: true,
        ..adult("A-101-kid")
    };
    let err = registry
        .enroll(&child, &consent(), &[face(M, &[1.0, 0.0])], "staff", t0())
        .expect_err("no guardian");
    assert!(err.to_string().contains("guardian"), "{err}");
    assert_eq!(count(&registry, "SELECT count(*) FROM owners"), 0);

    let with_guardian = Consent {
        guardian_name: Some("张伟".into()),
        guardian_relation: Some("father".into()),
        ..consent()
    };
    registry
        .enroll(
            &child,
            &with_guardian,
            &[face(M, &[1.0, 0.0])],
            "staff",
            t0(),
        )
        .expect("guardian given");
    let record = registry.owner("A-101-kid").expect("owner");
    assert!(record.owner.minor_under_14);
    assert_eq!(record.consents[0].guardian_name.as_deref(), Some("张伟"));
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let (_dir, mut registry, _) = file_registry();
    let good = [face(M, &[1.0, 0.0])];
    let cases: Vec<(&str, NewOwner, Vec<FaceTemplate>, &str)> = vec![
        ("no faces", adult("A"), vec![], "staff"),
        ("empty embedding", adult("A"), vec![face(M, &[])], "staff"),
        ("NaN", adult("A"), vec![face(M, &[f32::NAN, 1.0])], "staff"),
        ("zeros", adult("A"), vec![face(M, &[0.0, 0.0])], "staff"),
        ("empty model", adult("A"), vec![face("", &[1.0])], "staff"),
        ("empty id", adult(""), good.to_vec(), "staff"),
        ("long id", adult(&"x".repeat(65)), good.to_vec(), "staff"),
        ("control char", adult("A\n1"), good.to_vec(), "staff"),
        ("spaces", adult(" A"), good.to_vec(), "staff"),
        (
            "blank name",
            NewOwner {
                name: "  ".into(),
                ..adult("A")
            },
            good.to_vec(),
            "staff",
        ),
        (
            "empty unit",
            NewOwner {
                unit: Some(String::new()),
                ..adult("A")
            },
            good.to_vec(),
            "staff",
        ),
        ("no actor", adult("A"), good.to_vec(), ""),
    ];
    for (case, owner, faces, actor) in cases {
        let result = registry.enroll(&owner, &consent(), &faces, actor, t0());
        assert!(
            matches!(result, Err(RegistryError::Invalid(_))),
            "{case}: {result:?}"
        );
    }
    assert_eq!(count(&registry, "SELECT count(*) FROM owners"), 0);
    assert_eq!(count(&registry, "SELECT count(*) FROM audit"), 0);
    registry
        .enroll(&adult(&"x".repeat(64)), &consent(), &good, "staff", t0())
        .expect("64 characters is the limit, not past it");
}

#[test]
fn photos_are_stored_only_when_given() {
    let (_dir, mut registry, _) = file_registry();
    let with_photo = FaceTemplate {
        photo: Some(b"jpeg bytes".to_vec()),
        ..face(M, &[0.0, 1.0])
    };
    registry
        .enroll(
            &adult("A-101"),
            &consent(),
            &[face(M, &[1.0, 0.0]), with_photo],
            "staff",
            t0(),
        )
        .expect("enrol");
    assert_eq!(count(&registry, "SELECT count(photo) FROM templates"), 1);
    let record = registry.owner("A-101").expect("owner");
    let flags: Vec<bool> = record.templates.iter().map(|t| t.has_photo).collect();
    assert_eq!(flags, vec![false, true]);
}

#[test]
fn erasure_removes_face_data_from_the_file_but_keeps_the_audit_row() {
    let (_dir, mut registry, path) = file_registry();
    let photo_marker = b"PHOTO-OF-A101-MARKER-0123456789".repeat(8);
    let embedding = [1234.5678_f32, -8765.432, 42.4242, 0.0001234];
    let faces = [
        FaceTemplate {
            photo: Some(photo_marker.clone()),
            ..face(M, &embedding)
        },
        face(M, &[0.0, 1.0, 0.0, 0.0]),
    ];
    registry
        .enroll(&adult("A-101"), &consent(), &faces, "staff", t0())
        .expect("enrol");
    enrol(&mut registry, "B-202", &[0.0, 0.0, 1.0, 0.0]);

    registry
        .remove_owner("A-101", "物业经理", t0() + Duration::days(30))
        .expect("erase");

    assert!(matches!(
        registry.owner("A-101"),
        Err(RegistryError::UnknownOwner(_))
    ));
    assert_eq!(
        count(
            &registry,
            "SELECT count(*) FROM templates WHERE owner_id = 'A-101'"
        ),
        0
    );
    assert_eq!(
        count(
            &registry,
            "SELECT count(*) FROM consents WHERE owner_id = 'A-101'"
        ),
        0
    );
    assert_eq!(count(&registry, "SELECT count(photo) FROM templates"), 0);
    assert_eq!(
        count(&registry, "SELECT count(*) FROM templates"),
        1,
        "B stays"
    );

    let audit = registry.audit(10).expect("audit");
    let removal = audit
        .iter()
        .find(|a| a.action == "owner.remove")
        .expect("owner.remove row");
    assert_eq!(removal.subject, "A-101");
    assert_eq!(removal.actor, "物业经理");
    let detail = removal.detail.as_ref().expect("detail");
    assert_eq!(detail["templates_erased"], 2);
    assert_eq!(detail["photos_erased"], 1);
    assert!(
        audit
            .iter()
            .any(|a| a.action == "owner.enroll" && a.subject == "A-101")
    );

    // The bytes are gone from the database file and its WAL, not merely
    // unlinked from the b-tree.
    let embedding_bytes = encode_embedding(&embedding);
    for file in [
        path.clone(),
        PathBuf::from(format!("{}-wal", path.display())),
    ] {
        if let Ok(bytes) = std::fs::read(&file) {
            assert!(
                !contains(&bytes, &photo_marker[..31]),
                "photo left in {}",
                file.display()
            );
            assert!(
                !contains(&bytes, &embedding_bytes),
                "embedding left in {}",
                file.display()
            );
        }
    }
}

#[test]
fn suspended_owners_are_not_active_until_reactivated() {
    let (_dir, mut registry, _) = file_registry();
    enrol(&mut registry, "A-101", &[1.0, 0.0]);
    enrol(&mut registry, "B-202", &[0.0, 1.0]);
    registry
        .set_status("A-101", OwnerStatus::Suspended, "staff", t0())
        .expect("suspend");
    assert_eq!(
        active_ids(&registry, t0()),
        vec![SubjectKey::Owner("B-202".into())]
    );
    // Same status again: nothing to do, nothing audited.
    registry
        .set_status("A-101", OwnerStatus::Suspended, "staff", t0())
        .expect("suspend again");
    registry
        .set_status("A-101", OwnerStatus::Active, "staff", t0())
        .expect("reactivate");
    assert_eq!(active_ids(&registry, t0()).len(), 2);
    let actions: Vec<String> = registry
        .audit(10)
        .expect("audit")
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        actions,
        vec![
            "owner.activate",
            "owner.suspend",
            "owner.enroll",
            "owner.enroll"
        ]
    );
    assert!(matches!(
        registry.set_status("nobody", OwnerStatus::Active, "staff", t0()),
        Err(RegistryError::UnknownOwner(_))
    ));
}

#[test]
fn withdrawn_consent_stops_matching() {
    let (_dir, mut registry, _) = file_registry();
    enrol(&mut registry, "A-101", &[1.0, 0.0]);
    registry
        .conn
        .execute(
            "UPDATE consents SET withdrawn_at = ?1 WHERE owner_id = 'A-101'",
            [Millis(t0())],
        )
        .expect("withdraw");
    assert!(active_ids(&registry, t0()).is_empty());
}

#[test]
fn watch_entries_past_expiry_are_not_active() {
    let (_dir, mut registry, _) = file_registry();
    let entry = |name: &str, expires_at| NewWatchEntry {
        name: name.into(),
        reason: "reported by guard".into(),
        priority: Priority::Normal,
        expires_at,
    };
    let past = registry
        .watchlist_add(
            &entry("past", Some(t0() - Duration::seconds(1))),
            &[face(M, &[1.0, 0.0])],
            "staff",
            t0() - Duration::days(1),
        )
        .expect("past");
    let soon = registry
        .watchlist_add(
            &entry("soon", Some(t0() + Duration::hours(1))),
            &[face(M, &[0.0, 1.0])],
            "staff",
            t0(),
        )
        .expect("soon");
    let never = registry
        .watchlist_add(
            &entry("never", None),
            &[face(M, &[1.0, 1.0])],
            "staff",
            t0(),
        )
        .expect("never");

    assert_eq!(
        active_ids(&registry, t0()),
        vec![SubjectKey::Watch(soon), SubjectKey::Watch(never)]
    );
    assert_eq!(
        active_ids(&registry, t0() + Duration::hours(1)),
        vec![SubjectKey::Watch(never)],
        "an entry expiring exactly now is expired"
    );

    let list = registry.watchlist(t0()).expect("list");
    let expired: Vec<(i64, bool)> = list.iter().map(|w| (w.id, w.expired)).collect();
    assert_eq!(expired, vec![(past, true), (soon, false), (never, false)]);
    assert_eq!(list[0].template_count, 1);
    assert_eq!(list[0].created_by, "staff");

    registry
        .watchlist_remove(past, "staff", t0())
        .expect("remove");
    assert_eq!(registry.watchlist(t0()).expect("list").len(), 2);
    assert!(matches!(
        registry.watchlist_remove(past, "staff", t0()),
        Err(RegistryError::UnknownWatchEntry(id)) if id == past
    ));
    assert_eq!(count(&registry, "SELECT count(*) FROM templates"), 2);
}

#[test]
fn corrupt_embedding_is_reported_with_the_template_id() {
    let (_dir, mut registry, _) = file_registry();
    let ids = enrol(&mut registry, "A-101", &[1.0, 0.0]);
    registry
        .conn
        .pragma_update(None, "ignore_check_constraints", true)
        .expect("pragma");
    registry
        .conn
        .execute(
            "UPDATE templates SET embedding = x'000102' WHERE id = ?1",
            [ids[0]],
        )
        .expect("corrupt");
    let err = registry.active_templates(t0()).expect_err("corrupt");
    assert!(
        matches!(&err, RegistryError::CorruptTemplate { id, .. } if *id == ids[0]),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("template {}", ids[0])));
}

#[test]
fn owners_can_be_searched_filtered_and_paged() {
    let (_dir, mut registry, _) = file_registry();
    for (id, name, unit) in [
        ("10_1", "李娜", "1-1-101"),
        ("1041", "王强", "1-4-101"),
        ("B-7", "李四", "2-1-701"),
    ] {
        let owner = NewOwner {
            name: name.into(),
            unit: Some(unit.into()),
            ..adult(id)
        };
        registry
            .enroll(&owner, &consent(), &[face(M, &[1.0, 0.0])], "staff", t0())
            .expect("enrol");
    }
    registry
        .set_status("B-7", OwnerStatus::Suspended, "staff", t0())
        .expect("suspend");

    let ids = |filter: OwnerFilter| -> Vec<String> {
        registry
            .owners(&filter)
            .expect("list")
            .into_iter()
            .map(|o| o.owner.id)
            .collect()
    };
    assert_eq!(ids(OwnerFilter::default()), vec!["1041", "10_1", "B-7"]);
    let search = |s: &str| OwnerFilter {
        search: Some(s.into()),
        ..OwnerFilter::default()
    };
    assert_eq!(ids(search("李")), vec!["10_1", "B-7"]);
    assert_eq!(ids(search("701")), vec!["B-7"]);
    assert_eq!(ids(search("b-")), vec!["B-7"], "ASCII is case-insensitive");
    assert_eq!(
        ids(search("0_1")),
        vec!["10_1"],
        "_ is literal, not a wildcard"
    );
    assert_eq!(ids(search("%")), Vec::<String>::new());
    assert_eq!(
        ids(OwnerFilter {
            status: Some(OwnerStatus::Suspended),
            ..OwnerFilter::default()
        }),
        vec!["B-7"]
    );
    assert_eq!(
        ids(OwnerFilter {
            limit: 1,
            offset: 1,
            ..OwnerFilter::default()
        }),
        vec!["10_1"]
    );
    let summaries = registry.owners(&OwnerFilter::default()).expect("list");
    assert!(summaries.iter().all(|s| s.template_count == 1));
}

#[test]
fn update_owner_changes_fields_and_audits_only_their_names() {
    let (_dir, mut registry, _) = file_registry();
    enrol(&mut registry, "A-101", &[1.0, 0.0]);
    let later = t0() + Duration::hours(3);
    let patch = OwnerPatch {
        name: Some("张伟伟".into()),
        building: Some(None),
        grid_code: Some(Some("GZ-TH-0042".into())),
        ..OwnerPatch::default()
    };
    registry
        .update_owner("A-101", &patch, "staff", later)
        .expect("update");
    let owner = registry.owner("A-101").expect("owner").owner;
    assert_eq!(owner.name, "张伟伟");
    assert_eq!(owner.building, None);
    assert_eq!(owner.unit.as_deref(), Some("3-1-502"), "untouched");
    assert_eq!(owner.grid_code.as_deref(), Some("GZ-TH-0042"));
    assert_eq!(owner.updated_at, later);
    assert_eq!(owner.created_at, t0());

    let audit = &registry.audit(1).expect("audit")[0];
    assert_eq!(audit.action, "owner.update");
    let detail = audit.detail.as_ref().expect("detail").to_string();
    assert_eq!(detail, r#"{"fields":["name","building","grid_code"]}"#);

    assert!(matches!(
        registry.update_owner("A-101", &OwnerPatch::default(), "staff", later),
        Err(RegistryError::Invalid(_))
    ));
    assert!(matches!(
        registry.update_owner("nobody", &patch, "staff", later),
        Err(RegistryError::UnknownOwner(_))
    ));
}

#[test]
fn faces_can_be_added_and_removed() {
    let (_dir, mut registry, _) = file_registry();
    let first = enrol(&mut registry, "A-101", &[1.0, 0.0]);
    let added = registry
        .add_faces(
            "A-101",
            &[face(M, &[0.0, 1.0]), face(M, &[1.0, 1.0])],
            "staff",
            t0(),
        )
        .expect("add");
    assert_eq!(added.len(), 2);
    assert_eq!(registry.owner("A-101").expect("owner").template_count(), 3);

    let key = registry
        .remove_face(first[0], "staff", t0())
        .expect("remove");
    assert_eq!(key, SubjectKey::Owner("A-101".into()));
    assert_eq!(registry.owner("A-101").expect("owner").template_count(), 2);
    assert!(matches!(
        registry.remove_face(first[0], "staff", t0()),
        Err(RegistryError::UnknownTemplate(id)) if id == first[0]
    ));
    assert!(matches!(
        registry.add_faces("nobody", &[face(M, &[1.0, 0.0])], "staff", t0()),
        Err(RegistryError::UnknownOwner(_))
    ));
    let actions: Vec<String> = registry
        .audit(2)
        .expect("audit")
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, vec!["owner.remove_face", "owner.add_face"]);
}

#[test]
fn audit_is_newest_first_and_limited() {
    let (_dir, mut registry, _) = file_registry();
    for i in 0..5 {
        enrol(&mut registry, &format!("A-{i}"), &[1.0, 0.0]);
    }
    let audit = registry.audit(3).expect("audit");
    let subjects: Vec<&str> = audit.iter().map(|a| a.subject.as_str()).collect();
    assert_eq!(subjects, vec!["A-4", "A-3", "A-2"]);
    // No audit detail carries face data.
    for entry in &audit {
        let detail = entry.detail.as_ref().expect("detail").to_string();
        assert!(
            !detail.contains("embedding") && !detail.contains("photo\""),
            "{detail}"
        );
    }
}

#[test]
fn times_are_stored_to_the_millisecond_and_serialised_as_rfc3339() {
    let (_dir, mut registry, _) = file_registry();
    let now = datetime!(2025-03-01 08:00:00.123_456_789 +08:00);
    registry
        .enroll(
            &adult("A-101"),
            &consent(),
            &[face(M, &[1.0, 0.0])],
            "staff",
            now,
        )
        .expect("enrol");
    let record = registry.owner("A-101").expect("owner");
    assert_eq!(
        record.owner.created_at,
        datetime!(2025-03-01 00:00:00.123 UTC)
    );
    let value = serde_json::to_value(&record).expect("json");
    assert_eq!(value["created_at"], "2025-03-01T00:00:00.123Z");
    assert_eq!(value["status"], "active");
    assert_eq!(
        value["consents"][0]["withdrawn_at"],
        serde_json::Value::Null
    );
    assert_eq!(value["templates"][0]["model_id"], M);
}

#[test]
fn subjects_and_enums_have_stable_spellings() {
    let watch = Subject::Watch {
        id: 3,
        name: "x".into(),
        priority: Priority::Critical,
    };
    assert_eq!(
        serde_json::to_value(&watch).expect("json"),
        json!({"kind": "watch", "id": 3, "name": "x", "priority": "critical"})
    );
    assert_eq!(
        "verbal_recorded".parse::<ConsentMethod>(),
        Ok(ConsentMethod::VerbalRecorded)
    );
    let err = "paused".parse::<OwnerStatus>().expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "unknown owner status 'paused' (expected one of: active, suspended)"
    );
    assert!(Priority::Low < Priority::Critical);
    let consent: Consent = serde_json::from_value(json!({
        "given_at": "2025-03-01T08:00:00+08:00",
        "method": "electronic",
        "taken_by": "staff"
    }))
    .expect("consent json");
    assert_eq!(consent.purpose, Consent::DEFAULT_PURPOSE);
    assert_eq!(consent.given_at, datetime!(2025-03-01 00:00 UTC));
}

#[test]
fn debug_output_never_shows_embeddings_or_photos() {
    let template = FaceTemplate {
        photo: Some(vec![0xAB; 16]),
        ..face(M, &[0.123_456, 0.654_321])
    };
    let text = format!("{template:?}");
    assert!(!text.contains("0.123") && !text.contains("171"), "{text}");
    assert!(text.contains("dim: 2"), "{text}");
}
