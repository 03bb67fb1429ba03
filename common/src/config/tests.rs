//! Unit tests of configuration loading: layering, defaults, and errors that name their key.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn load_with(toml: &str, vars: &[(&str, &str)], flags: &Overrides) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cyclops.toml");
    std::fs::write(&path, toml).expect("write config");
    load(Some(&path), env(vars), Service::Ingest, flags)
}

fn key_of(err: ConfigError) -> String {
    match err {
        ConfigError::Key { key, .. } => key,
        other => panic!("expected a key error, got {other}"),
    }
}

#[test]
fn the_default_file_is_exactly_the_defaults() {
    assert_eq!(load_from_str(DEFAULT_CONFIG_TOML).expect("default file loads"), Config::default());
}

/// The lines of `DEFAULT_CONFIG_TOML` under the table `header`, up to the next table.
fn section(header: &str) -> Vec<&'static str> {
    let lines: Vec<&str> = DEFAULT_CONFIG_TOML.lines().map(|l| l.trim_start_matches('#').trim()).collect();
    let start = lines.iter().position(|l| *l == header).unwrap_or_else(|| panic!("{header} undocumented"));
    lines[start + 1..].iter().take_while(|l| !l.starts_with('[')).copied().collect()
}

/// Checks that every key of `table` is documented under `header`, and its
/// sub-tables under theirs.
fn assert_documented(header: &str, table: &serde_json::Map<String, serde_json::Value>) {
    let lines = section(header);
    for (key, value) in table {
        match value {
            serde_json::Value::Object(sub) if !sub.is_empty() => {
                let name = header.trim_matches(|c| c == '[' || c == ']');
                assert_documented(&format!("[{name}.{key}]"), sub);
            }
            _ => {
                assert!(lines.iter().any(|l| l.starts_with(&format!("{key} = "))), "{key} undocumented under {header}")
            }
        }
    }
}

#[test]
fn the_default_file_documents_every_key_in_its_section() {
    let mut config = Config::default();
    config.redis.url = Some("redis://x".into());
    config.ingest.sentry_database_url = Some("postgres://x".into());
    config.projects.push(ProjectKey { id: 1, public_key: "k".into(), secret_key: Some("s".into()) });
    let serialized = serde_json::to_value(&config).expect("serialize");
    for (name, value) in serialized.as_object().expect("object") {
        match value {
            serde_json::Value::Array(items) => {
                assert_documented(&format!("[[{name}]]"), items[0].as_object().expect("table"))
            }
            other => assert_documented(&format!("[{name}]"), other.as_object().expect("table")),
        }
    }
}

#[test]
fn no_file_means_defaults() {
    let config = load(None, env(&[]), Service::Ingest, &Overrides::default()).expect("loads");
    assert_eq!(config, Config::default());
    assert_eq!(config.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(config.kafka.topic_prefix, "cyclops-events-");
    assert_eq!(config.ingest.port, 3000);
    assert_eq!(config.forwarder.port, 3001);
    assert_eq!(config.ingest.healthcheck_text, "WORKING");
    assert_eq!(config.sentry.base_url, "http://127.0.0.1:9000");
    assert_eq!(config.redis.url, None);
}

#[test]
fn file_then_environment_then_flags() {
    let toml = "[kafka]\nbrokers = \"file:9092\"\ntopic_prefix = \"from-file-\"\n[ingest]\nport = 4000\n";
    let vars = [("CYCLOPS__KAFKA__BROKERS", "env:9092"), ("CYCLOPS__INGEST__PORT", "5000"), ("OTHER", "x")];
    let flags = Overrides { bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), port: Some(6000) };
    let config = load_with(toml, &vars, &flags).expect("loads");
    assert_eq!(config.kafka.brokers, "env:9092", "environment beats file");
    assert_eq!(config.kafka.topic_prefix, "from-file-", "file beats default");
    assert_eq!(config.ingest.port, 6000, "flag beats environment");
    assert_eq!(config.ingest.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(config.forwarder.port, 3001, "flags apply to the running service only");
}

#[test]
fn flags_apply_to_the_forwarder_section_for_the_forwarder() {
    let flags = Overrides { bind: None, port: Some(7000) };
    let config = load(None, env(&[]), Service::Forwarder, &flags).expect("loads");
    assert_eq!((config.forwarder.port, config.ingest.port), (7000, 3000));
}

#[test]
fn projects_load_with_optional_secret() {
    let toml =
        "[[projects]]\nid = 1\npublic_key = \"abc\"\n[[projects]]\nid = 2\npublic_key = \"def\"\nsecret_key = \"s\"\n";
    let config = load_with(toml, &[], &Overrides::default()).expect("loads");
    assert_eq!(config.projects.len(), 2);
    assert_eq!(config.projects[0].secret_key, None);
    assert_eq!(config.projects[1].secret_key.as_ref().map(crate::secret::Secret::expose), Some("s"));
}

#[test]
fn an_unknown_key_is_named() {
    let err = load_with("[kafka]\nbrokerz = \"x:1\"\n", &[], &Overrides::default()).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("brokerz"), "{text}");
    assert!(key_of(err).starts_with("kafka"));
}

#[test]
fn an_unknown_section_is_named() {
    let err = load_with("[kafak]\nbrokers = \"x:1\"\n", &[], &Overrides::default()).expect_err("refused");
    assert!(err.to_string().contains("kafak"), "{err}");
}

#[test]
fn an_unknown_environment_key_is_named() {
    let err = load_with("", &[("CYCLOPS__INGEST__PROT", "1")], &Overrides::default()).expect_err("refused");
    assert!(err.to_string().contains("prot"), "{err}");
}

#[test]
fn a_wrongly_typed_value_names_its_key() {
    let err = load_with("[ingest]\nport = \"many\"\n", &[], &Overrides::default()).expect_err("refused");
    assert_eq!(key_of(err), "ingest.port");
    let err = load_with("[ingest]\nport = 70000\n", &[], &Overrides::default()).expect_err("refused");
    assert_eq!(key_of(err), "ingest.port");
    let err = load_with("", &[("CYCLOPS__FORWARDER__PORT", "x")], &Overrides::default()).expect_err("refused");
    assert_eq!(key_of(err), "forwarder.port");
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        ("[kafka]\nbrokers = \"nohost\"\n", "kafka.brokers"),
        ("[kafka]\nbrokers = \"\"\n", "kafka.brokers"),
        ("[kafka]\ntopic_prefix = \"bad/prefix\"\n", "kafka.topic_prefix"),
        ("[kafka]\nmetadata_timeout_ms = 0\n", "kafka.metadata_timeout_ms"),
        ("[redis]\nurl = \"http://nope\"\n", "redis.url"),
        ("[sentry]\nbase_url = \"not a url\"\n", "sentry.base_url"),
        ("[sentry]\nbase_url = \"ftp://host\"\n", "sentry.base_url"),
        ("[ingest]\ndrain_timeout_secs = 0\n", "ingest.drain_timeout_secs"),
        ("[[projects]]\nid = 0\npublic_key = \"a\"\n", "projects[0].id"),
        ("[ingest.flood]\nmax_uses = 0\n", "ingest.flood.max_uses"),
        ("[ingest.sampling]\nignore_percentage = { \"x\" = 5.0 }\n", "ingest.sampling.ignore_percentage"),
        ("[ingest.sampling]\nignore_percentage = { \"05\" = 5.0 }\n", "ingest.sampling.ignore_percentage"),
        ("[ingest.sampling]\nignore_percentage = { \"1\" = 101.0 }\n", "ingest.sampling.ignore_percentage"),
        ("[ingest]\nmax_event_bytes = 100\n", "ingest.max_event_bytes"),
        ("[ingest]\nmax_envelope_bytes = 1000000000\n", "ingest.max_envelope_bytes"),
        ("[ingest]\nsentry_database_url = \"mysql://x\"\n", "ingest.sentry_database_url"),
        ("[ingest]\nupdate_period_secs = 0\n", "ingest.update_period_secs"),
        ("[redis]\ntimeout_ms = 0\n", "redis.timeout_ms"),
        ("[redis]\nkey_prefix = \"\"\n", "redis.key_prefix"),
        ("[[projects]]\nid = 1\npublic_key = \"a b\"\n", "projects[0].public_key"),
        (
            "[[projects]]\nid = 1\npublic_key = \"a\"\n[[projects]]\nid = 2\npublic_key = \"a\"\n",
            "projects[1].public_key",
        ),
    ];
    for (toml, key) in cases {
        let err = load_with(toml, &[], &Overrides::default()).expect_err(toml);
        assert_eq!(key_of(err), key, "for {toml:?}");
    }
}

#[test]
fn a_missing_project_field_is_named() {
    let err = load_with("[[projects]]\nid = 1\n", &[], &Overrides::default()).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("projects") && text.contains("public_key"), "{text}");
}

#[test]
fn a_missing_file_and_bad_toml_are_file_errors() {
    let missing =
        load(Some(std::path::Path::new("/nonexistent/cyclops.toml")), env(&[]), Service::Ingest, &Overrides::default());
    assert!(matches!(missing, Err(ConfigError::File { .. })));
    let err = load_with("[kafka\nbrokers = 1", &[], &Overrides::default()).expect_err("refused");
    assert!(matches!(err, ConfigError::File { .. }), "{err}");
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn init_writes_the_default_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cyclops.toml");
    write_default(&path).expect("written");
    let loaded = load(Some(&path), env(&[]), Service::Ingest, &Overrides::default()).expect("loads");
    assert_eq!(loaded, Config::default());
    assert!(write_default(&path).is_err(), "a second init must not overwrite");
}

#[test]
fn environment_strings_fit_numbers_and_strings_alike() {
    let vars = [
        ("CYCLOPS__INGEST__HEALTHCHECK_TEXT", "1"),
        ("CYCLOPS__FORWARDER__GROUP_ID", "123"),
        ("CYCLOPS__INGEST__PORT", "4321"),
    ];
    let config = load_with("", &vars, &Overrides::default()).expect("loads");
    assert_eq!(config.ingest.healthcheck_text, "1");
    assert_eq!(config.forwarder.group_id, "123");
    assert_eq!(config.ingest.port, 4321);
}

#[test]
fn every_url_scheme_the_redis_client_takes_is_accepted() {
    for url in [
        "redis://x:1/0",
        "rediss://x:1",
        "redis+unix:///tmp/r.sock",
        "unix:///tmp/r.sock",
        "valkey://x:1",
        "valkeys://x:1",
    ] {
        let config = load_with(&format!("[redis]\nurl = \"{url}\"\n"), &[], &Overrides::default());
        assert!(config.is_ok(), "{url}: {config:?}");
    }
}

#[test]
fn an_empty_environment_value_unsets_redis() {
    let config = load_with("[redis]\nurl = \"redis://x:1\"\n", &[("CYCLOPS__REDIS__URL", "")], &Overrides::default())
        .expect("loads");
    assert_eq!(config.redis.url, None);
}

#[test]
fn nested_ingest_tables_and_enums_load() {
    let toml = "[ingest]\nack = \"enqueue\"\n[ingest.flood]\nmax_uses = 3\nwindow_secs = 0\n\
[ingest.sampling]\nignore_percentage = { \"7\" = 25.5 }\n";
    let config = load_with(toml, &[("CYCLOPS__INGEST__FLOOD__MAX_USES", "4")], &Overrides::default()).expect("loads");
    assert_eq!(config.ingest.ack, AckMode::Enqueue);
    assert_eq!((config.ingest.flood.max_uses, config.ingest.flood.window_secs), (4, 0));
    assert_eq!(config.ingest.sampling.percent_for(7), 25.5);
    assert_eq!(config.ingest.sampling.percent_for(8), 0.0);
    let err = load_with("[ingest]\nack = \"maybe\"\n", &[], &Overrides::default()).expect_err("refused");
    assert_eq!(key_of(err), "ingest.ack");
}

#[test]
fn librdkafka_pass_through_takes_dotted_keys_and_any_scalar() {
    let toml = "[kafka.librdkafka]\n\"socket.keepalive.enable\" = true\n\"fetch.max.bytes\" = 52428800\n\
\"compression.codec\" = \"zstd\"\n";
    let config = load_with(toml, &[], &Overrides::default()).expect("loads");
    let got: Vec<(&str, &str)> = config.kafka.librdkafka.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        got,
        [("compression.codec", "zstd"), ("fetch.max.bytes", "52428800"), ("socket.keepalive.enable", "true")]
    );
}

#[test]
fn librdkafka_pass_through_refuses_what_cyclops_sets_and_what_librdkafka_does_not_know() {
    for (line, key) in [
        ("acks = \"1\"", "kafka.librdkafka.acks"),
        ("\"enable.auto.commit\" = true", "kafka.librdkafka.enable.auto.commit"),
        ("\"sasl.password\" = \"x\"", "kafka.librdkafka.sasl.password"),
        ("\"no.such.thing\" = 1", "kafka.librdkafka.no.such.thing"),
        ("\"socket.keepalive.enable\" = \"perhaps\"", "kafka.librdkafka.socket.keepalive.enable"),
    ] {
        let err = load_with(&format!("[kafka.librdkafka]\n{line}\n"), &[], &Overrides::default()).expect_err(line);
        assert_eq!(key_of(err), key, "{line}");
    }
}

#[test]
fn sasl_needs_its_keys_and_only_sasl_uses_them() {
    let base = "[kafka]\nsecurity_protocol = \"sasl_plaintext\"\n";
    let err = load_with(base, &[], &Overrides::default()).expect_err("no mechanism");
    assert_eq!(key_of(err), "kafka.sasl_mechanism");
    let err = load_with(
        &format!("{base}sasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"u\"\n"),
        &[],
        &Overrides::default(),
    )
    .expect_err("no password");
    assert_eq!(key_of(err), "kafka.sasl_password");
    let vars = [("CYCLOPS__KAFKA__SASL_PASSWORD", "from-the-environment")];
    let config = load_with(
        &format!("{base}sasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"u\"\n"),
        &vars,
        &Overrides::default(),
    )
    .expect("loads");
    assert_eq!(config.kafka.sasl_mechanism, Some(SaslMechanism::ScramSha512));
    assert_eq!(config.kafka.sasl_password.as_ref().map(crate::secret::Secret::expose), Some("from-the-environment"));
    assert!(!format!("{config:?}").contains("from-the-environment"), "a password in Debug");
    let err = load_with("[kafka]\nsasl_username = \"u\"\n", &[], &Overrides::default()).expect_err("plaintext");
    assert_eq!(key_of(err), "kafka.sasl_username");
    let err = load_with("[kafka]\nsasl_mechanism = \"GSSAPI\"\n", &[], &Overrides::default()).expect_err("unknown");
    assert_eq!(key_of(err), "kafka.sasl_mechanism");
}

#[test]
fn tls_files_must_exist_and_need_a_tls_protocol() {
    let err =
        load_with("[kafka]\nssl_ca_location = \"/etc/hostname\"\n", &[], &Overrides::default()).expect_err("plaintext");
    assert_eq!(key_of(err), "kafka.ssl_ca_location");
    let err = load_with(
        "[kafka]\nsecurity_protocol = \"ssl\"\nssl_ca_location = \"/no/such/ca.pem\"\n",
        &[],
        &Overrides::default(),
    )
    .expect_err("missing file");
    assert_eq!(key_of(err), "kafka.ssl_ca_location");
    let err = load_with(
        "[kafka]\nsecurity_protocol = \"ssl\"\nssl_certificate_location = \"/etc/hostname\"\n",
        &[],
        &Overrides::default(),
    )
    .expect_err("a certificate without its key");
    assert_eq!(key_of(err), "kafka.ssl_key_location");
    load_with(
        "[kafka]\nsecurity_protocol = \"ssl\"\nssl_ca_location = \"/etc/hostname\"\n",
        &[],
        &Overrides::default(),
    )
    .expect("loads");
}

#[test]
fn min_insync_replicas_cannot_exceed_the_replication_factor() {
    let err =
        load_with("[kafka]\ntopic_replication_factor = 3\ntopic_min_insync_replicas = 4\n", &[], &Overrides::default())
            .expect_err("refused");
    assert_eq!(key_of(err), "kafka.topic_min_insync_replicas");
    let config =
        load_with("[kafka]\ntopic_replication_factor = 3\ntopic_min_insync_replicas = 2\n", &[], &Overrides::default())
            .expect("loads");
    assert_eq!(config.kafka.topic_min_insync_replicas, Some(2));
}

#[test]
fn a_bad_redis_url_is_refused_without_its_password() {
    let err = load_with("[redis]\nurl = \"http://:hunter2@x:1\"\n", &[], &Overrides::default()).expect_err("refused");
    let shown = err.to_string();
    assert!(shown.contains("redis.url") && !shown.contains("hunter2"), "{shown}");
}
