//! The stateful functions' wiring (`App::from_env`, what their `main` runs) creates the DynamoDB
//! client at the first store call, not at start, and keeps it. That client reads the process
//! environment (region, credentials, `AWS_ENDPOINT_URL_DYNAMODB`), which a test cannot set for
//! itself while other tests of this binary run beside it (`set_var` is `unsafe` for that reason);
//! so the test runs its second half in a child: this same test binary, started with nothing but
//! the variables a deployed function has, pointed at the test server.

use std::process::Command;
use std::sync::Arc;

use common::App;
use common::clock::SystemClock;
use common::store::{Item, Table, Write};
use wxim_tests::dynamo;

/// Set only in the child's environment: the half below refuses to run without it.
const CHILD: &str = "WXIM_TEST_LAZY_STORE_CHILD";

#[tokio::test]
async fn the_production_wiring_creates_the_store_client_at_the_first_store_call() {
    let tables = dynamo::fresh_store(Arc::new(SystemClock)).await;
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "lazy_store::in_a_deployed_environment",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env_clear()
        .env(CHILD, "1")
        .env("TABLE_NAME", tables.table_name(Table::State))
        .env("OUTBOX_TABLE_NAME", tables.table_name(Table::Outbox))
        .env("WECHAT_MP_APPID", "wx1234567890abcdef")
        .env("WECHAT_MP_SECRET", "mp-secret")
        .env("WECHAT_MP_TOKEN", "mptoken")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_DYNAMODB", dynamo::endpoint())
        .output()
        .expect("start the child half");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child half failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A filter that matched nothing would pass too: the child must have run exactly its half.
    assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "the second half of the test above, which runs it in a child with its environment"]
async fn in_a_deployed_environment() {
    assert_eq!(
        std::env::var(CHILD).as_deref(),
        Ok("1"),
        "run by the_production_wiring_creates_the_store_client_at_the_first_store_call"
    );
    let app = App::from_env()
        .await
        .expect("a deployed function's variables");
    assert!(!app.built().store_client, "created at start");

    let key = format!("lazy#{}", wxim_tests::random_suffix());
    assert_eq!(
        app.store.get(Table::State, &key, "probe").await.unwrap(),
        None
    );
    assert!(
        app.built().store_client,
        "not created by the first store call"
    );

    // The same client serves the next calls, against the tables the variables name.
    let item = Item::new(&key, "probe").with("n", 1i64);
    app.store
        .write(Write::put(Table::State, item.clone()))
        .await
        .unwrap();
    let read = app.store.get(Table::State, &key, "probe").await.unwrap();
    assert_eq!(read.map(|i| i.attrs), Some(item.attrs));

    // Store calls create nothing else: the HTTP client and the token manager wait for theirs.
    let built = app.built();
    assert!(!built.http_client && !built.tokens, "{built:?}");
}
