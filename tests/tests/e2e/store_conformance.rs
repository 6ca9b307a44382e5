//! One conformance suite, run against the embedded SQLite store and against DynamoDB (moto on
//! loopback): both must give the same answers for every operation the product relies on.

use std::sync::Arc;

use common::clock::{Clock, ManualClock};
use common::store::{Attr, Cond, Item, Store, StoreError, TTL_ATTR, Table, Update, Write};
use wxim_tests::{BACKENDS, Backend, store};

const T0: i64 = 1_700_000_000;

async fn fixture(b: Backend) -> (Arc<dyn Store>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(T0));
    let c: Arc<dyn Clock> = clock.clone();
    (store(b, c).await, clock)
}

macro_rules! on_both {
    ($name:ident, $body:expr) => {
        #[tokio::test]
        async fn $name() {
            for b in BACKENDS {
                let (s, clock) = fixture(b).await;
                let f = $body;
                f(s, clock, b).await;
            }
        }
    };
}

fn item(pk: &str) -> Item {
    Item::new(pk, "-")
        .with("s", "text")
        .with("n", 42i64)
        .with("b", true)
}

on_both!(put_get_round_trip, |s: Arc<dyn Store>, _c, b| async move {
    s.write(Write::put(Table::State, item("a"))).await.unwrap();
    let got = s.get(Table::State, "a", "-").await.unwrap().unwrap();
    assert_eq!(got, item("a"), "{b:?}");
    assert_eq!(
        s.get(Table::State, "missing", "-").await.unwrap(),
        None,
        "{b:?}"
    );
    // The two tables are separate namespaces.
    assert_eq!(s.get(Table::Outbox, "a", "-").await.unwrap(), None, "{b:?}");
});

on_both!(
    a_batch_read_answers_in_the_order_asked,
    |s: Arc<dyn Store>, c: Arc<ManualClock>, b| async move {
        s.write(Write::put(Table::State, item("a"))).await.unwrap();
        s.write(Write::put(Table::State, item("c"))).await.unwrap();
        let short = Item::new("e", "-").with(TTL_ATTR, T0 + 10);
        s.write(Write::put(Table::State, short)).await.unwrap();
        let keys = [("c", "-"), ("missing", "-"), ("a", "-"), ("e", "-")];
        let got = s.get_many(Table::State, &keys).await.unwrap();
        let pks: Vec<_> = got
            .iter()
            .map(|i| i.as_ref().map(|i| i.pk.as_str()))
            .collect();
        assert_eq!(pks, [Some("c"), None, Some("a"), Some("e")], "{b:?}");
        assert_eq!(got[2].as_ref(), Some(&item("a")), "{b:?}");
        c.advance(11);
        let got = s.get_many(Table::State, &keys).await.unwrap();
        assert!(got[3].is_none(), "{b:?}: an expired item reads as absent");
        assert!(s.get_many(Table::State, &[]).await.unwrap().is_empty());
        // The other table is another namespace.
        let other = s.get_many(Table::Outbox, &[("a", "-")]).await.unwrap();
        assert_eq!(other, [None], "{b:?}");
        // What DynamoDB refuses is refused everywhere: a key twice, more than 100 keys.
        let e = s
            .get_many(Table::State, &[("a", "-"), ("a", "-")])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{b:?}: {e:?}");
        let many: Vec<String> = (0..101).map(|i| format!("k{i}")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|k| (k.as_str(), "-")).collect();
        let e = s.get_many(Table::State, &many).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{b:?}: {e:?}");
        let hundred = s.get_many(Table::State, &many[..100]).await.unwrap();
        assert_eq!(hundred.len(), 100, "{b:?}");
    }
);

on_both!(
    conditional_put_refuses_a_live_item,
    |s: Arc<dyn Store>, _c, b| async move {
        let w = || Write::put(Table::State, item("k").with("v", 1i64)).when(Cond::NotExists);
        s.write(w()).await.unwrap();
        let e = s
            .write(Write::put(Table::State, item("k").with("v", 2i64)).when(Cond::NotExists))
            .await
            .unwrap_err();
        assert_eq!(e, StoreError::ConditionFailed { index: 0 }, "{b:?}");
        let got = s.get(Table::State, "k", "-").await.unwrap().unwrap();
        assert_eq!(got.n("v"), Some(1), "{b:?}: a failed put changes nothing");
    }
);

on_both!(
    expired_items_read_as_absent_and_can_be_replaced,
    |s: Arc<dyn Store>, c: Arc<ManualClock>, b| async move {
        let marker = Item::new("m", "-").with(TTL_ATTR, T0 + 10);
        s.write(Write::put(Table::State, marker.clone()).when(Cond::NotExists))
            .await
            .unwrap();
        assert!(
            s.get(Table::State, "m", "-").await.unwrap().is_some(),
            "{b:?}"
        );
        assert!(
            s.write(Write::put(Table::State, marker.clone()).when(Cond::NotExists))
                .await
                .is_err()
        );
        c.advance(11);
        assert_eq!(s.get(Table::State, "m", "-").await.unwrap(), None, "{b:?}");
        assert!(s.scan(Table::State).await.unwrap().is_empty(), "{b:?}");
        assert!(
            s.query(Table::State, "m", "").await.unwrap().is_empty(),
            "{b:?}"
        );
        let fresh = Item::new("m", "-")
            .with(TTL_ATTR, T0 + 100)
            .with("gen", 2i64);
        s.write(Write::put(Table::State, fresh).when(Cond::NotExists))
            .await
            .expect("an expired marker no longer deduplicates");
        // A condition check stands only inside a transaction; there, Exists means live.
        assert!(matches!(
            s.write(Write::check(Table::State, "m", "-", Cond::Exists))
                .await,
            Err(StoreError::Invalid(_))
        ));
        s.transact(vec![Write::check(Table::State, "m", "-", Cond::Exists)])
            .await
            .unwrap_or_else(|e| panic!("{b:?}: {e}"));
    }
);

on_both!(
    updates_add_set_if_absent_remove,
    |s: Arc<dyn Store>, _c, b| async move {
        let up = |u: Vec<Update>| Write::update(Table::State, "u", "tpl#1", u);
        let got = s
            .write(up(vec![
                Update::add("credits", 1),
                Update::set_if_absent("created_at", T0),
                Update::set("status", "accept"),
            ]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.n("credits"), Some(1), "{b:?}");
        let got = s
            .write(up(vec![
                Update::add("credits", 2),
                Update::set_if_absent("created_at", T0 + 5),
                Update::remove("status"),
            ]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.n("credits"), Some(3), "{b:?}");
        assert_eq!(
            got.n("created_at"),
            Some(T0),
            "{b:?}: if_not_exists keeps the first"
        );
        assert_eq!(got.s("status"), None, "{b:?}");
        assert_eq!(got.pk, "u");
        assert_eq!(got.sk, "tpl#1");
    }
);

on_both!(
    conditional_decrement_never_goes_below_zero,
    |s: Arc<dyn Store>, _c, b| async move {
        let spend = || {
            Write::update(Table::State, "c", "-", vec![Update::add("credits", -1)])
                .when(Cond::ge("credits", 1))
        };
        s.write(Write::update(
            Table::State,
            "c",
            "-",
            vec![Update::add("credits", 2)],
        ))
        .await
        .unwrap();
        assert!(s.write(spend()).await.is_ok(), "{b:?}");
        assert!(s.write(spend()).await.is_ok(), "{b:?}");
        let e = s.write(spend()).await.unwrap_err();
        assert!(e.is_condition_failed(), "{b:?}");
        let got = s.get(Table::State, "c", "-").await.unwrap().unwrap();
        assert_eq!(got.n("credits"), Some(0), "{b:?}");
        // No item at all: the condition is false, nothing is created.
        assert!(
            s.write(
                Write::update(Table::State, "none", "-", vec![Update::add("credits", -1)])
                    .when(Cond::ge("credits", 1))
            )
            .await
            .unwrap_err()
            .is_condition_failed()
        );
        assert_eq!(
            s.get(Table::State, "none", "-").await.unwrap(),
            None,
            "{b:?}"
        );
    }
);

on_both!(
    transactions_are_all_or_nothing,
    |s: Arc<dyn Store>, _c, b| async move {
        s.write(Write::put(Table::State, item("dup")))
            .await
            .unwrap();
        let e = s
            .transact(vec![
                Write::put(Table::Outbox, item("o1")),
                Write::put(Table::State, item("dup")).when(Cond::NotExists),
                Write::update(Table::State, "x", "-", vec![Update::add("n", 1)]),
            ])
            .await
            .unwrap_err();
        assert_eq!(e, StoreError::ConditionFailed { index: 1 }, "{b:?}");
        assert_eq!(
            s.get(Table::Outbox, "o1", "-").await.unwrap(),
            None,
            "{b:?}"
        );
        assert_eq!(s.get(Table::State, "x", "-").await.unwrap(), None, "{b:?}");
        s.write(Write::put(Table::State, item("gone")))
            .await
            .unwrap();
        s.transact(vec![
            Write::put(Table::Outbox, item("o1")),
            Write::check(Table::State, "dup", "-", Cond::Exists),
            Write::update(Table::State, "x", "-", vec![Update::add("n", 1)]),
            Write::delete(Table::State, "gone", "-"),
        ])
        .await
        .unwrap_or_else(|e| panic!("{b:?}: {e}"));
        assert!(s.get(Table::Outbox, "o1", "-").await.unwrap().is_some());
        assert_eq!(
            s.get(Table::State, "x", "-").await.unwrap().unwrap().n("n"),
            Some(1)
        );
        assert_eq!(s.get(Table::State, "gone", "-").await.unwrap(), None);
        assert!(s.get(Table::State, "dup", "-").await.unwrap().is_some());
    }
);

on_both!(
    transaction_rules_match_dynamodb,
    |s: Arc<dyn Store>, _c, b| async move {
        let twice = s
            .transact(vec![
                Write::put(Table::State, item("t")),
                Write::update(Table::State, "t", "-", vec![Update::add("n", 1)]),
            ])
            .await
            .unwrap_err();
        assert!(matches!(twice, StoreError::Invalid(_)), "{b:?}: {twice:?}");
        let many: Vec<Write> = (0..101)
            .map(|i| Write::put(Table::State, item(&format!("p{i}"))))
            .collect();
        assert!(
            matches!(s.transact(many).await.unwrap_err(), StoreError::Invalid(_)),
            "{b:?}"
        );
        assert!(
            matches!(
                s.transact(vec![]).await.unwrap_err(),
                StoreError::Invalid(_)
            ),
            "{b:?}"
        );
        assert!(matches!(
            s.write(Write::put(Table::State, Item::new("", "-")))
                .await
                .unwrap_err(),
            StoreError::Invalid(_)
        ));
        for (pk, sk) in [
            ("p".repeat(2049), "-".to_owned()),
            ("p".into(), "s".repeat(1025)),
        ] {
            assert!(
                matches!(
                    s.write(Write::put(Table::State, Item::new(pk, sk)))
                        .await
                        .unwrap_err(),
                    StoreError::Invalid(_)
                ),
                "{b:?}: DynamoDB's key size limits"
            );
        }
        assert!(
            s.scan(Table::State).await.unwrap().is_empty(),
            "{b:?}: nothing written"
        );
    }
);

on_both!(condition_semantics, |s: Arc<dyn Store>, _c, b| async move {
    s.write(Write::put(Table::State, item("c"))).await.unwrap();
    let check = |c: Cond| {
        let s = s.clone();
        async move {
            s.write(
                Write::update(Table::State, "c", "-", vec![Update::set("touched", true)]).when(c),
            )
            .await
            .is_ok()
        }
    };
    assert!(check(Cond::eq("s", "text")).await, "{b:?}");
    assert!(!check(Cond::eq("s", "other")).await, "{b:?}");
    assert!(
        check(Cond::ne("absent", "x")).await,
        "{b:?}: <> on an absent attribute holds"
    );
    assert!(!check(Cond::ne("s", "text")).await, "{b:?}");
    assert!(
        !check(Cond::lt("absent", 5)).await,
        "{b:?}: comparisons on absent attributes fail"
    );
    assert!(
        check(Cond::lt("n", 43)).await && !check(Cond::lt("n", 42)).await,
        "{b:?}"
    );
    assert!(
        check(Cond::le("n", 42)).await && check(Cond::gt("n", 41)).await,
        "{b:?}"
    );
    assert!(
        !check(Cond::lt("s", 5)).await,
        "{b:?}: a string is not a number"
    );
    assert!(
        check(Cond::has("b")).await && check(Cond::lacks("zz")).await,
        "{b:?}"
    );
    assert!(
        check(Cond::Or(vec![
            Cond::eq("s", "no"),
            Cond::eq("n", Attr::N(42))
        ]))
        .await,
        "{b:?}"
    );
    assert!(
        !check(Cond::And(vec![
            Cond::eq("s", "text"),
            Cond::eq("n", Attr::N(1))
        ]))
        .await,
        "{b:?}"
    );
    assert!(
        check(Cond::Exists).await && !check(Cond::NotExists).await,
        "{b:?}"
    );
});

on_both!(
    query_by_prefix_in_sort_key_order,
    |s: Arc<dyn Store>, _c, b| async move {
        for sk in ["tpl#b", "tpl#a", "other", "tpl#c"] {
            s.write(Write::put(Table::State, Item::new("q", sk).with("x", 1i64)))
                .await
                .unwrap();
        }
        let got: Vec<String> = s
            .query(Table::State, "q", "tpl#")
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.sk)
            .collect();
        assert_eq!(got, ["tpl#a", "tpl#b", "tpl#c"], "{b:?}");
        assert_eq!(
            s.query(Table::State, "q", "").await.unwrap().len(),
            4,
            "{b:?}"
        );
        assert_eq!(s.scan(Table::State).await.unwrap().len(), 4, "{b:?}");
    }
);

on_both!(conditional_delete, |s: Arc<dyn Store>, _c, b| async move {
    s.write(Write::put(Table::State, item("d"))).await.unwrap();
    assert!(
        s.write(Write::delete(Table::State, "d", "-").when(Cond::eq("s", "nope")))
            .await
            .unwrap_err()
            .is_condition_failed(),
        "{b:?}"
    );
    s.write(Write::delete(Table::State, "d", "-").when(Cond::eq("s", "text")))
        .await
        .unwrap();
    assert_eq!(s.get(Table::State, "d", "-").await.unwrap(), None, "{b:?}");
});

/// DynamoDB may answer part of a `BatchGetItem` and list the rest in `UnprocessedKeys` (moto
/// never does): a stand-in speaking its wire format answers so once, and the store asks again
/// for exactly the keys left.
#[tokio::test]
async fn a_batch_read_asks_again_for_unprocessed_keys() {
    use common::store::DynamoStore;
    use local::standin::{Scripted, StandIn};
    use serde_json::json;

    let api = StandIn::wechat(0, &[]).await.unwrap();
    let key = |pk: &str| json!({"pk": {"S": pk}, "sk": {"S": "-"}});
    api.script(
        "/",
        vec![
            Scripted::Json(json!({
                "Responses": {"t": [{"pk": {"S": "a"}, "sk": {"S": "-"}, "n": {"N": "1"}}]},
                "UnprocessedKeys": {"t": {"Keys": [key("b")], "ConsistentRead": true}},
            })),
            Scripted::Json(json!({
                "Responses": {"t": [{"pk": {"S": "b"}, "sk": {"S": "-"}, "n": {"N": "2"}}]},
                "UnprocessedKeys": {},
            })),
        ],
    );
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(T0));
    let client = wxim_tests::dynamo::client_at(&api.base);
    let store = DynamoStore::new(client, "t", "o", clock);
    let got = store
        .get_many(Table::State, &[("a", "-"), ("b", "-"), ("c", "-")])
        .await
        .unwrap();
    let n: Vec<_> = got
        .iter()
        .map(|i| i.as_ref().and_then(|i| i.n("n")))
        .collect();
    assert_eq!(n, [Some(1), Some(2), None]);
    let asked = api.requests("/");
    assert_eq!(asked.len(), 2);
    assert_eq!(
        asked[0].body["RequestItems"]["t"]["Keys"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        asked[1].body["RequestItems"]["t"]["Keys"],
        json!([key("b")])
    );
    assert_eq!(
        asked[1].body["RequestItems"]["t"]["ConsistentRead"],
        json!(true)
    );
}
