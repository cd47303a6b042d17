//! Property test: random operation sequences against a real hub over a real
//! socket give exactly the results of a `BTreeMap` model.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::{Client, TestHub};
use proptest::prelude::*;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
enum IfRev {
    Absent,
    Current,
    Zero,
    Stale,
}

#[derive(Debug, Clone)]
enum Op {
    Memoize(usize, Value),
    Get(usize),
    Update(usize, Value, IfRev),
    Delete(usize, IfRev),
    IsMemoized(usize),
    Keys(usize, Option<usize>, u64),
}

/// Key names: a few with shared prefixes, plus enough `n/NN` keys that many
/// share a store shard (where merge bugs in `keys` paging would show).
fn key_name(i: usize) -> String {
    match i {
        0 => "a".into(),
        1 => "ab".into(),
        2 => "b".into(),
        3 => "b/x".into(),
        4 => "b/y".into(),
        5 => "é".into(),
        n => format!("n/{n:02}"),
    }
}
const KEY_COUNT: usize = 200;
const PREFIXES: [&str; 5] = ["", "a", "b/", "n/", "z"];

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z ]{0,6}".prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(|v| json!(v)),
        ("[a-z]{1,3}", any::<bool>()).prop_map(|(k, b)| json!({ k: b })),
    ]
}

fn if_rev() -> impl Strategy<Value = IfRev> {
    prop_oneof![
        3 => Just(IfRev::Absent),
        2 => Just(IfRev::Current),
        1 => Just(IfRev::Zero),
        1 => Just(IfRev::Stale),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEY_COUNT;
    prop_oneof![
        (k.clone(), value()).prop_map(|(k, v)| Op::Memoize(k, v)),
        k.clone().prop_map(Op::Get),
        (k.clone(), value(), if_rev()).prop_map(|(k, v, r)| Op::Update(k, v, r)),
        (k.clone(), if_rev()).prop_map(|(k, r)| Op::Delete(k, r)),
        k.clone().prop_map(Op::IsMemoized),
        (0..PREFIXES.len(), prop::option::of(k), 1..30u64).prop_map(|(p, a, l)| Op::Keys(p, a, l)),
    ]
}

/// The reference: a sorted map of key → (value, rev) and the hub-wide rev.
struct Model {
    map: BTreeMap<String, (Value, u64)>,
    rev: u64,
}

impl Model {
    fn resolve(&self, key: &str, r: &IfRev) -> Option<u64> {
        let cur = self.map.get(key).map_or(0, |e| e.1);
        match r {
            IfRev::Absent => None,
            IfRev::Current => Some(cur),
            IfRev::Zero => Some(0),
            IfRev::Stale => Some(cur + 1000),
        }
    }

    /// The response a correct hub gives: `Ok(result)` or `Err((code, data))`.
    fn apply(&mut self, key: &str, op: &Op, if_rev: Option<u64>) -> Result<Value, (i64, Value)> {
        match op {
            Op::Memoize(_, v) => {
                if let Some((cur, rev)) = self.map.get(key) {
                    return Ok(json!({"value": cur, "rev": rev, "created": false}));
                }
                self.rev += 1;
                self.map.insert(key.to_string(), (v.clone(), self.rev));
                Ok(json!({"value": v, "rev": self.rev, "created": true}))
            }
            Op::Get(_) => match self.map.get(key) {
                Some((v, rev)) => Ok(json!({"value": v, "rev": rev})),
                None => Err((-32001, json!({ "key": key }))),
            },
            Op::Update(_, v, _) => {
                let cur = self.map.get(key).map_or(0, |e| e.1);
                if if_rev.is_some_and(|r| r != cur) {
                    return Err((-32002, json!({ "rev": cur })));
                }
                self.rev += 1;
                let created = self
                    .map
                    .insert(key.to_string(), (v.clone(), self.rev))
                    .is_none();
                Ok(json!({"rev": self.rev, "created": created}))
            }
            Op::Delete(_, _) => {
                let cur = self.map.get(key).map_or(0, |e| e.1);
                if if_rev.is_some_and(|r| r != cur) {
                    return Err((-32002, json!({ "rev": cur })));
                }
                if self.map.remove(key).is_none() {
                    return Err((-32001, json!({ "key": key })));
                }
                self.rev += 1;
                Ok(json!({ "rev": self.rev }))
            }
            Op::IsMemoized(_) => Ok(json!(self.map.contains_key(key))),
            Op::Keys(..) => unreachable!("keys is answered by Model::keys"),
        }
    }

    fn keys(&self, ns: &str, prefix: &str, after: Option<&str>, limit: u64) -> Value {
        let full_prefix = format!("{ns}{prefix}");
        let rows: Vec<(&String, &(Value, u64))> = self
            .map
            .iter()
            .filter(|(k, _)| k.starts_with(&full_prefix))
            .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
            .collect();
        let limit = limit as usize;
        let page: Vec<Value> = rows
            .iter()
            .take(limit)
            .map(|(k, (v, rev))| {
                json!({"key": k, "rev": rev, "bytes": serde_json::to_string(v).unwrap().len()})
            })
            .collect();
        let next = if rows.len() > limit {
            json!(rows[limit - 1].0)
        } else {
            Value::Null
        };
        json!({"keys": page, "next": next})
    }
}

struct Shared {
    rt: tokio::runtime::Runtime,
    hub: TestHub,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let hub = rt.block_on(TestHub::start());
        Shared { rt, hub }
    })
}

async fn run_case(hub: &TestHub, case: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut c: Client = hub.client().await;
    let rev0 = c.call("stats", json!({})).await["rev"]
        .as_u64()
        .unwrap_or(0);
    // Every case works in its own namespace so earlier cases' keys don't interfere.
    let ns = format!("case{case:06}/");
    let mut model = Model {
        map: BTreeMap::new(),
        rev: rev0,
    };
    for op in ops {
        let (method, params, expected) = match op {
            Op::Keys(p, after, limit) => {
                let after_key = after.map(|a| format!("{ns}{}", key_name(a)));
                let params = json!({"prefix": format!("{ns}{}", PREFIXES[*p]), "after": after_key, "limit": limit});
                let expected = Ok(model.keys(&ns, PREFIXES[*p], after_key.as_deref(), *limit));
                ("keys", params, expected)
            }
            Op::Memoize(k, v) | Op::Update(k, v, _) => {
                let key = format!("{ns}{}", key_name(*k));
                let r = match op {
                    Op::Update(_, _, r) => model.resolve(&key, r),
                    _ => None,
                };
                let method = if matches!(op, Op::Memoize(..)) {
                    "memoize"
                } else {
                    "update"
                };
                let params = json!({"key": key, "value": v, "if_rev": r});
                let expected = model.apply(&key, op, r);
                (method, params, expected)
            }
            Op::Delete(k, r) => {
                let key = format!("{ns}{}", key_name(*k));
                let r = model.resolve(&key, r);
                let expected = model.apply(&key, op, r);
                ("delete", json!({"key": key, "if_rev": r}), expected)
            }
            Op::Get(k) | Op::IsMemoized(k) => {
                let key = format!("{ns}{}", key_name(*k));
                let method = if matches!(op, Op::Get(_)) {
                    "get"
                } else {
                    "is_memoized"
                };
                let expected = model.apply(&key, op, None);
                (method, json!({ "key": key }), expected)
            }
        };
        let resp = c.request(method, params.clone()).await;
        match expected {
            Ok(result) => {
                prop_assert_eq!(&resp["result"], &result, "{} {} → {}", method, params, resp)
            }
            Err((code, data)) => {
                prop_assert_eq!(
                    &resp["error"]["code"],
                    &json!(code),
                    "{} {} → {}",
                    method,
                    params,
                    resp
                );
                prop_assert_eq!(
                    &resp["error"]["data"],
                    &data,
                    "{} {} → {}",
                    method,
                    params,
                    resp
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn hub_matches_btreemap_model(ops in prop::collection::vec(op(), 1..120)) {
        static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = shared();
        s.rt.block_on(run_case(&s.hub, case, &ops))?;
    }
}
