//! The example plugin (`examples/kv-plugin`, built only on the SDK) under a real OpenBao:
//! registered from the catalog, its key/value paths written, read, listed and deleted, and
//! a minted token's lease renewed and revoked.

mod common;

use serde_json::Value;

use common::Bao;

/// A dev server with the example plugin registered as `kv-example` and mounted at `kv`.
fn bao_with_example() -> Bao {
    let bao = Bao::dev();
    let name = "kv-example";
    std::fs::copy(
        common::workspace_bin("vault-plugin-kv-example"),
        bao.plugin_dir.join(name),
    )
    .expect("copy the example plugin");
    bao.register(name);
    bao.enable("kv", name);
    bao
}

fn keys(bao: &Bao, path: &str) -> Vec<String> {
    let out = bao.cli(&["list", "-format=json", path]);
    if out.code == 2 {
        return Vec::new(); // nothing to list
    }
    serde_json::from_value(out.ok().json()).expect("a list of keys")
}

#[test]
fn example_plugin_stores_lists_and_deletes_values() {
    let bao = bao_with_example();
    bao.write("kv/kv/greeting", &["value=hello"]).ok();
    bao.write("kv/kv/farewell", &["value=bye"]).ok();
    let read = bao.read("kv/kv/greeting").ok().json();
    assert_eq!(read["data"]["value"], "hello", "{read}");
    assert_eq!(keys(&bao, "kv/kv"), vec!["farewell", "greeting"]);

    let missing = bao.write("kv/kv/empty", &["note=x"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("missing required field") && missing.stderr.contains("value"),
        "a missing required field is a 400 naming it: {missing:?}"
    );
    assert!(missing.stderr.contains("Code: 400"), "{missing:?}");

    bao.cli(&["delete", "kv/kv/greeting"]).ok();
    assert_eq!(
        bao.read("kv/kv/greeting").code,
        2,
        "deleted values are gone"
    );
    assert_eq!(keys(&bao, "kv/kv"), vec!["farewell"]);
}

#[test]
fn example_plugin_tokens_live_as_long_as_their_lease() {
    let bao = bao_with_example();
    let minted = bao.read("kv/tokens/alice").ok().json();
    let lease_id = minted["lease_id"].as_str().expect("a lease").to_string();
    assert!(lease_id.starts_with("kv/tokens/alice/"), "{minted}");
    assert_eq!(
        minted["renewable"],
        Value::Bool(true),
        "from the registered type"
    );
    assert_eq!(minted["lease_duration"], 3600);
    assert!(minted["data"]["token"]
        .as_str()
        .unwrap_or("")
        .starts_with("kv."));
    assert_eq!(keys(&bao, "kv/tokens").len(), 1);

    let short = bao
        .cli(&["read", "-format=json", "kv/tokens/bob", "ttl=60"])
        .ok()
        .json();
    assert_eq!(short["lease_duration"], 60, "{short}");

    let renewed = bao
        .cli(&[
            "lease",
            "renew",
            "-format=json",
            "-increment=120",
            &lease_id,
        ])
        .ok()
        .json();
    assert_eq!(renewed["lease_duration"], 120, "{renewed}");

    bao.cli(&["lease", "revoke", "-sync", &lease_id]).ok();
    assert_eq!(keys(&bao, "kv/tokens").len(), 1, "only bob's token is left");
    bao.cli(&["lease", "revoke", "-sync", "-prefix", "kv/tokens"])
        .ok();
    assert!(
        keys(&bao, "kv/tokens").is_empty(),
        "revoking removes the record"
    );
}
