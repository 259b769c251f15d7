//! Nothing slow under the gallery lock (issue 11 item 1, issue 10 finding 7):
//! over a real socket on 127.0.0.1, with the real models, real face photos
//! and a real SQLite file, `GET /owners` is answered while a large
//! enrolment is still running its models.
//!
//! Ordering, not speed: the list is asked for after the enrolment's upload
//! is written and the models have had time to start; an answer that does
//! not yet show the new owner proves it was served before the enrolment
//! wrote. When the enrolment held the gallery lock through decoding and
//! inference, every such list request waited for the write and showed the
//! owner.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::http::{app_state, multipart};
use facegate::http::router;
use facegate::registry::{Registry, Role};
use serde_json::Value;

/// A photo made larger (2×, re-encoded), in memory only, so that decoding
/// and detection take long enough to ask for the list meanwhile.
fn enlarged(path: &std::path::Path) -> Vec<u8> {
    let img = image::open(path).expect("decode test photo").to_rgb8();
    let big = image::imageops::resize(
        &img,
        img.width() * 2,
        img.height() * 2,
        image::imageops::FilterType::Triangle,
    );
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&big)
        .expect("encode");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn owners_list_is_served_while_a_large_enrolment_runs_its_models() {
    let Some(faces) = common::faces_dir() else {
        return;
    };
    let config = common::shipped_config();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fg.db");
    let now = time::OffsetDateTime::now_utc();
    let token = Registry::open(&db)
        .unwrap()
        .token_create("gate-desk", Role::Enroller, "test", now)
        .unwrap();
    let state = app_state(config, &db, &dir.path().join("data"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, router(Arc::new(state)))
            .await
            .unwrap();
    });

    // Ten photos (the most one request takes) of one person.
    let person = faces.join("identities/Barack_Obama");
    let mut photos = Vec::new();
    for i in 0..10 {
        photos.push((
            format!("p{i}.jpg"),
            enlarged(&person.join(format!("{}.jpg", i % 5 + 1))),
        ));
    }
    let (content_type, body) = multipart(
        &[
            ("id", "B-0101"),
            ("name", "Barack Obama"),
            ("consent_method", "written"),
        ],
        &photos,
    );

    // The enrolment over a raw socket, so the test knows when the upload is
    // written; its answer is read on another thread.
    let mut post = std::net::TcpStream::connect(addr).unwrap();
    write!(
        post,
        "POST /api/v1/owners HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    post.write_all(&body).unwrap();
    post.flush().unwrap();
    let enrolled = Arc::new(AtomicBool::new(false));
    let reader = {
        let enrolled = enrolled.clone();
        std::thread::spawn(move || {
            let mut answer = String::new();
            post.read_to_string(&mut answer).unwrap();
            enrolled.store(true, Ordering::SeqCst);
            answer
        })
    };

    // Let the server read the upload and start the models; then ask for
    // the list until the enrolment has answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("http://{addr}/api/v1/owners");
    let auth = format!("Bearer {token}");
    let (before_write, lists, saw_background) = tokio::task::spawn_blocking(move || {
        let (mut before_write, mut lists, mut saw_background) = (0, 0, false);
        while !enrolled.load(Ordering::SeqCst) {
            saw_background |= threads_at_background_priority() > 0;
            let v: Value = ureq::get(&url)
                .set("Authorization", &auth)
                .call()
                .expect("GET /owners")
                .into_json()
                .unwrap();
            lists += 1;
            if v["total"] == 0 {
                before_write += 1;
            }
        }
        (before_write, lists, saw_background)
    })
    .await
    .unwrap();
    let answer = reader.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "the enrolment must succeed: {answer}"
    );
    assert!(
        before_write >= 1,
        "no list answer came back while the enrolment ran its models ({lists} asked): \
         the list waited for the enrolment's lock"
    );

    // The models ran at background priority (the cameras keep the CPU) and
    // the thread was put back afterwards.
    if facegate::sched::check().is_ok()
        && facegate::sched::current_nice().is_some_and(|n| n < facegate::sched::NICE)
    {
        assert!(
            saw_background,
            "no thread ran at nice {} while the enrolment ran its models",
            facegate::sched::NICE
        );
        assert_eq!(
            threads_at_background_priority(),
            0,
            "a thread was left at background priority after the enrolment"
        );
    } else {
        eprintln!(
            "########## gallery_lock: background priority NOT checked: {} ##########",
            facegate::sched::check()
                .err()
                .unwrap_or_else(|| "this test already runs at nice >= 10".into())
        );
    }

    // And the owner is there once it has answered.
    let v: Value = ureq::get(&format!("http://{addr}/api/v1/owners"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["items"][0]["template_count"], 10, "{v}");
    server.abort();
}

/// Threads of this process at the background nice value, from
/// `/proc/self/task/*/stat` (field 19, counted after the command name).
fn threads_at_background_priority() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(16))
                .and_then(|n| n.parse::<i32>().ok())
                == Some(facegate::sched::NICE)
        })
        .count()
}
