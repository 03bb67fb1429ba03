//! Keys from Sentry's own PostgreSQL database: a table shaped like
//! `sentry_projectkey`, loaded at start and on every refresh; a failed
//! refresh keeps the last good keys.

use std::time::Duration;

use cyclops_tests::{TestService, event_id, postgres_url, sentry_auth, spawn_ingest, test_config, unique, wait_for};
use tokio_postgres::{Client, NoTls};

const ACTIVE_KEY: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01";
const INACTIVE_KEY: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa02";
const NEW_KEY: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa03";
const PROJECT: i64 = 77;

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("postgres connects");
    tokio::spawn(connection);
    client
}

/// A fresh database named `name` with Sentry's `sentry_projectkey` shape.
async fn sentry_database(name: &str) -> (Client, String) {
    let admin = connect(&postgres_url()).await;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let port = std::env::var("PG_PORT").unwrap_or_else(|_| "5432".into());
    let url = format!("postgres://postgres@127.0.0.1:{port}/{name}");
    let client = connect(&url).await;
    client
        .batch_execute(
            "CREATE TABLE sentry_projectkey (
                id bigserial PRIMARY KEY,
                project_id bigint NOT NULL,
                label varchar(64),
                public_key varchar(32) UNIQUE,
                secret_key varchar(32) UNIQUE,
                roles bigint NOT NULL DEFAULT 1,
                status integer NOT NULL DEFAULT 0,
                date_added timestamptz DEFAULT now()
            )",
        )
        .await
        .expect("create table");
    (client, url)
}

async fn add_key(db: &Client, key: &str, status: i32) {
    db.execute(
        "INSERT INTO sentry_projectkey (project_id, public_key, secret_key, status) VALUES ($1, $2, $3, $4)",
        &[&PROJECT, &key, &format!("s{}", &key[1..]), &status],
    )
    .await
    .expect("insert key");
}

async fn status_for(ingest: &TestService, key: &str) -> u16 {
    reqwest::Client::new()
        .post(ingest.url(&format!("/api/{PROJECT}/store/")))
        .header("x-sentry-auth", sentry_auth(key))
        .body(format!(r#"{{"event_id":"{}","message":"keyed"}}"#, event_id()))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// A fresh `sentry_projectkey` table with one active and one inactive key,
/// and an ingest reading it every second (`restrict`: `restrict_api_access`).
async fn ingest_with_keys_table(restrict: bool) -> (Client, String, TestService) {
    let name = unique("sentry").replace('-', "_");
    let (db, url) = sentry_database(&name).await;
    add_key(&db, ACTIVE_KEY, 0).await;
    add_key(&db, INACTIVE_KEY, 1).await;
    let mut config = test_config();
    config.projects.clear();
    config.ingest.restrict_api_access = restrict;
    config.ingest.sentry_database_url = Some(url.into());
    config.ingest.update_period_secs = 1;
    let ingest = spawn_ingest(config).await.expect("ingest");
    (db, name, ingest)
}

async fn drop_database(db: Client, name: &str) {
    drop(db);
    let admin = connect(&postgres_url()).await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.expect("drop database");
}

#[tokio::test]
async fn active_keys_load_from_sentrys_table_and_refreshes_pick_up_new_ones() {
    let (db, name, ingest) = ingest_with_keys_table(true).await;

    wait_for(Duration::from_secs(15), "the active key to load", || async {
        (status_for(&ingest, ACTIVE_KEY).await == 200).then_some(())
    })
    .await
    .expect("active key accepted");
    assert_eq!(status_for(&ingest, INACTIVE_KEY).await, 403, "inactive keys are refused");
    assert_eq!(status_for(&ingest, NEW_KEY).await, 403, "not there yet");

    add_key(&db, NEW_KEY, 0).await;
    wait_for(Duration::from_secs(15), "a refresh to pick up the new key", || async {
        (status_for(&ingest, NEW_KEY).await == 200).then_some(())
    })
    .await
    .expect("new key accepted after a refresh");

    // The table goes away: refreshes fail, and the last good keys stay.
    db.batch_execute("ALTER TABLE sentry_projectkey RENAME TO gone").await.expect("rename");
    wait_for(Duration::from_secs(15), "a failed refresh to be counted", || async {
        let metrics = reqwest::get(ingest.url("/metrics")).await.ok()?.text().await.ok()?;
        metrics
            .lines()
            .any(|l| l.starts_with("cyclops_ingest_key_refresh_failures_total") && !l.ends_with(" 0"))
            .then_some(())
    })
    .await
    .expect("failure counted");
    assert_eq!(status_for(&ingest, ACTIVE_KEY).await, 200, "last good keys kept");
    assert_eq!(status_for(&ingest, NEW_KEY).await, 200);

    ingest.stop().await.expect("stops");
    drop_database(db, &name).await;
}

#[tokio::test]
async fn a_disabled_key_is_refused_even_with_unrestricted_access() {
    let (db, name, ingest) = ingest_with_keys_table(false).await;
    wait_for(Duration::from_secs(15), "the keys to load", || async {
        (status_for(&ingest, INACTIVE_KEY).await == 403).then_some(())
    })
    .await
    .expect("the disabled key refused once the keys are loaded");
    assert_eq!(status_for(&ingest, NEW_KEY).await, 200, "a key the table does not have passes, unrestricted");
    assert_eq!(status_for(&ingest, ACTIVE_KEY).await, 200);

    ingest.stop().await.expect("stops");
    drop_database(db, &name).await;
}
