use super::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;

/// The Interface columns of Open vSwitch 3.1's schema (8.3.1) that the tests need, as
/// the server sends them, and a table without the packet-rate columns (older OVS).
fn schema(with_kpkts: bool) -> Value {
    let mut cols = json!({
        "name": {"type": "string", "mutable": false},
        "ingress_policing_rate": {"type": {"key": {"type": "integer", "minInteger": 0}}},
        "ingress_policing_burst": {"type": {"key": {"type": "integer", "minInteger": 0}}},
        "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
        "ifindex": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4294967295u64}, "min": 0, "max": 1}, "ephemeral": true},
        "bond_members": {"type": {"key": "string", "min": 0, "max": "unlimited"}}
    });
    if with_kpkts {
        cols["ingress_policing_kpkts_rate"] =
            json!({"type": {"key": {"type": "integer", "minInteger": 0}}});
    }
    json!({"name": "Open_vSwitch", "version": "8.3.1", "tables": {"Interface": {"columns": cols}}})
}

fn watch() -> Watch {
    Watch {
        database: "Open_vSwitch".into(),
        tables: vec![(
            "Interface".into(),
            [
                "name",
                "ingress_policing_rate",
                "ingress_policing_burst",
                "ingress_policing_kpkts_rate",
                "external_ids",
                "ifindex",
            ]
            .map(String::from)
            .to_vec(),
        )],
        probe: Duration::from_millis(300),
    }
}

#[test]
fn endpoints_as_ovs_spells_them() {
    for (text, want) in [
        (
            "unix:/run/openvswitch/db.sock",
            Ok(Endpoint::Unix("/run/openvswitch/db.sock".into())),
        ),
        (
            "tcp:127.0.0.1:6640",
            Ok(Endpoint::Tcp("127.0.0.1:6640".into())),
        ),
        ("unix:db.sock", Err("absolute")),
        ("tcp:127.0.0.1", Err("HOST:PORT")),
        ("ssl:1.2.3.4:6640", Err("no ssl")),
        ("/run/openvswitch/db.sock", Err("only unix:PATH")),
    ] {
        match (text.parse::<Endpoint>(), want) {
            (Ok(e), Ok(w)) => {
                assert_eq!(e, w);
                assert_eq!(e.to_string(), text);
            }
            (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn column_kinds_from_the_schema() {
    for (ty, want) in [
        (json!("string"), ColumnKind::Atomic),
        (
            json!({"key": {"type": "integer", "minInteger": 0}}),
            ColumnKind::Atomic,
        ),
        // An optional value (at most one element): update2 sends the new value, not a
        // difference (recorded from ovsdb-server 3.1 clearing Port.qos:
        // `{"modify":{"qos":["set",[]]}}` for a row that held a reference).
        (
            json!({"key": "integer", "min": 0, "max": 1}),
            ColumnKind::Atomic,
        ),
        (
            json!({"key": "integer", "min": 0, "max": 4}),
            ColumnKind::Set,
        ),
        (
            json!({"key": "string", "min": 0, "max": "unlimited"}),
            ColumnKind::Set,
        ),
        (
            json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"}),
            ColumnKind::Map,
        ),
    ] {
        assert_eq!(column_kind(Some(&ty)), want, "{ty}");
    }
}

#[test]
fn framer_takes_whole_messages_off_an_unframed_stream() {
    let mut f = Framer::default();
    f.push(br#"{"id":1,"result":[]}  {"method":"echo","par"#);
    assert_eq!(f.next().unwrap(), Some(json!({"id": 1, "result": []})));
    assert_eq!(f.next().unwrap(), None, "half a message waits");
    f.push(br#"ams":[],"id":"e"}"#);
    assert_eq!(f.next().unwrap().unwrap()["method"], "echo");
    assert_eq!(f.next().unwrap(), None);
    f.push(b"\n  \n");
    assert_eq!(f.next().unwrap(), None, "whitespace alone is nothing");
    // Brackets and escaped quotes inside strings do not end a message.
    f.push(br#"{"a":"}]\"{","b":[1,{"c":2}]}"#);
    f.push(b"[1]");
    assert_eq!(
        f.next().unwrap(),
        Some(json!({"a": "}]\"{", "b": [1, {"c": 2}]}))
    );
    assert_eq!(f.next().unwrap(), Some(json!([1])));
    // A message split at every byte is found once whole.
    let whole = br#"{"id":7,"result":{"x":"a\\"}}"#;
    for b in whole.iter() {
        assert_eq!(f.next().unwrap(), None);
        f.push(&[*b]);
    }
    assert_eq!(
        f.next().unwrap(),
        Some(json!({"id": 7, "result": {"x": "a\\"}}))
    );
    f.push(b"}garbage");
    let e = f.next().unwrap_err();
    assert!(e.to_string().contains("not JSON"), "{e}");
    let mut f = Framer::default();
    f.push(b"{\"a\":tru}");
    let e = f.next().unwrap_err();
    assert!(e.to_string().contains("not JSON"), "{e}");
}

fn replica_with_schema() -> Replica {
    Replica {
        schema: Schema::parse(&schema(true), "Open_vSwitch").unwrap(),
        ..Replica::default()
    }
}

#[test]
fn update2_initial_modify_and_delete() {
    let mut r = replica_with_schema();
    r.apply(json!({"Interface": {
        "u1": {"initial": {"name": "tap1", "ingress_policing_rate": 1000,
                           "external_ids": ["map", [["vm-id", "101"], ["owner", "ops"]]]}},
        "u2": {"initial": {"name": "tap2"}}
    }}))
    .unwrap();
    assert_eq!(r.tables["Interface"].len(), 2);
    let g = r.generation;
    // A map's diff: a new key is added, a key with its held value removed, a key with
    // another value replaced. A set's diff: symmetric difference. An atom: replaced.
    r.apply(json!({"Interface": {"u1": {"modify": {
        "ingress_policing_rate": 2000,
        "external_ids": ["map", [["sluice", "limited"], ["owner", "ops"], ["vm-id", "102"]]],
        "ifindex": 7
    }}}}))
    .unwrap();
    let row = &r.tables["Interface"]["u1"];
    assert_eq!(row["ingress_policing_rate"], 2000);
    assert_eq!(
        map_pairs(row.get("external_ids")).unwrap(),
        vec![
            (json!("vm-id"), json!("102")),
            (json!("sluice"), json!("limited"))
        ]
    );
    assert_eq!(row["ifindex"], json!(7));
    // An optional value is replaced, as ovsdb-server clears one: with the empty set.
    r.apply(json!({"Interface": {"u1": {"modify": {"ifindex": ["set", []]}}}}))
        .unwrap();
    assert_eq!(r.tables["Interface"]["u1"]["ifindex"], json!(["set", []]));
    // A set of many: the diff's elements held are removed, the others added.
    r.apply(json!({"Interface": {"u1": {"modify": {"bond_members": ["set", ["a", "b"]]}}}}))
        .unwrap();
    r.apply(json!({"Interface": {"u1": {"modify": {"bond_members": ["set", ["a", "c"]]}}}}))
        .unwrap();
    assert_eq!(
        r.tables["Interface"]["u1"]["bond_members"],
        json!(["set", ["b", "c"]])
    );
    r.apply(json!({"Interface": {"u1": {"modify": {"bond_members": "b"}}}}))
        .unwrap();
    assert_eq!(
        r.tables["Interface"]["u1"]["bond_members"],
        json!(["set", ["c"]]),
        "a one-element diff comes as the atom alone"
    );
    r.apply(json!({"Interface": {"u2": {"delete": null}}}))
        .unwrap();
    assert!(!r.tables["Interface"].contains_key("u2"));
    assert!(r.generation > g);
    for (bad, says) in [
        (json!([]), "not an object"),
        (
            json!({"Interface": {"u1": {"rename": {}}}}),
            "unknown update",
        ),
        (json!({"Interface": {"u1": {}}}), "empty update"),
        (
            json!({"Interface": {"u1": {"modify": {"external_ids": "x"}}}}),
            "malformed map",
        ),
    ] {
        let e = r.apply(bad.clone()).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

/// A scripted ovsdb-server on a unix socket: each connection is handed to `serve`.
async fn fake_server<F, Fut>(dir: &std::path::Path, serve: F) -> Endpoint
where
    F: Fn(usize, tokio::net::UnixStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let path = dir.join("db.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(n, s));
            n += 1;
        }
    });
    Endpoint::Unix(path)
}

/// Read one message (the client's are one JSON text per write; a test reads them whole).
async fn read_msg<R: AsyncBufReadExt + Unpin>(r: &mut R, f: &mut Framer) -> Option<Value> {
    loop {
        if let Some(v) = f.next().unwrap() {
            return Some(v);
        }
        let buf = r.fill_buf().await.ok()?;
        if buf.is_empty() {
            return None;
        }
        let n = buf.len();
        f.push(buf);
        r.consume(n);
    }
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, v: Value) {
    w.write_all(v.to_string().as_bytes()).await.unwrap();
}

/// The handshake as ovsdb-server answers it; returns the monitor_cond params.
async fn handshake(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    w: &mut tokio::net::unix::OwnedWriteHalf,
    f: &mut Framer,
    with_kpkts: bool,
    initial: Value,
) -> Value {
    let m = read_msg(r, f).await.unwrap();
    assert_eq!(m["method"], "get_schema");
    assert_eq!(m["params"], json!(["Open_vSwitch"]));
    send(
        w,
        json!({"id": m["id"], "result": schema(with_kpkts), "error": null}),
    )
    .await;
    let m = read_msg(r, f).await.unwrap();
    assert_eq!(m["method"], "monitor_cond");
    send(w, json!({"id": m["id"], "result": initial, "error": null})).await;
    m["params"].clone()
}

#[tokio::test]
async fn a_recorded_session_monitors_answers_echo_and_transacts() {
    let dir = tempfile::tempdir().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<Value>();
    let endpoint = fake_server(dir.path(), move |_, s| {
        let seen = seen_tx.clone();
        async move {
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let mut f = Framer::default();
            let initial = json!({"Interface": {"u1": {"initial": {"name": "tap1"}}}});
            let params = handshake(&mut r, &mut w, &mut f, false, initial).await;
            seen.send(params).unwrap();
            // The server's own echo must be answered with its params.
            send(&mut w, json!({"method": "echo", "params": ["ping"], "id": "echo"})).await;
            let m = read_msg(&mut r, &mut f).await.unwrap();
            seen.send(m).unwrap();
            // A transact: the update2 of its change comes first, then the reply.
            let m = read_msg(&mut r, &mut f).await.unwrap();
            seen.send(m.clone()).unwrap();
            send(&mut w, json!({"method": "update2", "params": ["sluice", {"Interface": {"u1": {"modify": {"ingress_policing_rate": 5000}}}}], "id": null})).await;
            send(&mut w, json!({"id": m["id"], "result": [{"count": 1}], "error": null})).await;
            // Then one op's error.
            let m = read_msg(&mut r, &mut f).await.unwrap();
            send(&mut w, json!({"id": m["id"], "result": [{"error": "constraint violation", "details": "no such row"}], "error": null})).await;
            let _ = read_msg(&mut r, &mut f).await;
        }
    })
    .await;
    let session = Session::start(endpoint, watch());
    assert!(session.wait_live(Duration::from_secs(5)).await);
    // The schema lacks the packet-rate column: it is not monitored, and the caller can
    // tell; the rest is.
    let params = seen.recv().await.unwrap();
    assert_eq!(params[1], "sluice");
    let cols = &params[2]["Interface"][0]["columns"];
    assert!(
        !cols
            .as_array()
            .unwrap()
            .contains(&json!("ingress_policing_kpkts_rate"))
    );
    assert!(cols.as_array().unwrap().contains(&json!("external_ids")));
    assert!(!session.replica().columns["Interface"].contains("ingress_policing_kpkts_rate"));
    assert_eq!(session.replica().tables["Interface"]["u1"]["name"], "tap1");
    let echo = seen.recv().await.unwrap();
    assert_eq!(
        echo,
        json!({"id": "echo", "result": ["ping"], "error": null})
    );

    let op = json!({"op": "update", "table": "Interface", "where": [["name", "==", "tap1"]], "row": {"ingress_policing_rate": 5000}});
    let results = session
        .transact(vec![op.clone()], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(results, vec![json!({"count": 1})]);
    // No read-back needed: the server's update came before its reply.
    assert_eq!(
        session.replica().tables["Interface"]["u1"]["ingress_policing_rate"],
        5000
    );
    let sent = seen.recv().await.unwrap();
    assert_eq!(sent["method"], "transact");
    assert_eq!(sent["params"], json!(["Open_vSwitch", op]));

    let e = session
        .transact(vec![op], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "OVSDB refused a transact: constraint violation (no such row)"
    );
}

#[tokio::test]
async fn garbage_or_a_closed_socket_is_a_lost_session_that_resyncs() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = fake_server(dir.path(), move |n, s| async move {
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut f = Framer::default();
        let initial =
            json!({"Interface": {format!("u{n}"): {"initial": {"name": format!("tap{n}")}}}});
        handshake(&mut r, &mut w, &mut f, true, initial).await;
        match n {
            // The first server sends garbage, the second half-closes, the third stays.
            0 => send(&mut w, json!("x")).await,
            1 => {
                w.write_all(b"{\"method\": \"upd").await.unwrap();
                drop(w);
                let _ = read_msg(&mut r, &mut f).await;
                return;
            }
            _ => {}
        }
        let _ = read_msg(&mut r, &mut f).await;
        // Stay open while the client lives.
        while read_msg(&mut r, &mut f).await.is_some() {}
        drop(w);
    })
    .await;
    let session = Session::start(endpoint, watch());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let r = session.replica();
            if r.live && r.tables["Interface"].contains_key("u2") {
                // A full resync: nothing of the earlier sessions is left.
                assert_eq!(r.tables["Interface"].len(), 1);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never resynced on the third connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_server_that_stops_answering_is_found_by_echo() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = fake_server(dir.path(), move |n, s| async move {
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut f = Framer::default();
        handshake(&mut r, &mut w, &mut f, true, json!({})).await;
        if n == 0 {
            // Reads everything, answers nothing: the echo goes unanswered.
            while read_msg(&mut r, &mut f).await.is_some() {}
        }
        while let Some(m) = read_msg(&mut r, &mut f).await {
            if m["method"] == "echo" {
                send(
                    &mut w,
                    json!({"id": m["id"], "result": m["params"], "error": null}),
                )
                .await;
            }
        }
    })
    .await;
    let session = Session::start(endpoint, watch());
    assert!(session.wait_live(Duration::from_secs(5)).await);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    loop {
        let down = session.replica().down_reason.clone();
        if let Some(why) = down {
            assert!(why.contains("no answer within 0.6s"), "{why}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a silent server was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        session.wait_live(Duration::from_secs(5)).await,
        "back on the next server"
    );
}

#[tokio::test]
async fn a_transact_while_down_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::start(Endpoint::Unix(dir.path().join("none.sock")), watch());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let e = session
        .transact(
            vec![json!({"op": "comment", "comment": "x"})],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, OvsdbError::Down(ref why) if why.contains("cannot connect")),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!session.replica().live);
}
