use async_nats::jetstream::{self, kv, stream::Republish};
use futures::future::join_all;
use futures::StreamExt;
use std::time::{Duration, Instant};

fn p50(mut s: Vec<Duration>) -> u128 {
    s.sort_unstable();
    s[s.len() / 2].as_micros()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let nats = mycosynth_testkit::NatsServer::start();
    let url = nats.url();
    let mut floor = mycosynth_benches::paths::KvFloor::start(&url, "floorb", n).await;
    let wc = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(wc.clone());
    let b = js
        .create_key_value(kv::Config {
            bucket: "bb".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = js
        .create_key_value(kv::Config {
            bucket: "cc".into(),
            republish: Some(Republish {
                source: "$KV.cc.>".into(),
                destination: "ev.c.>".into(),
                headers_only: true,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let _ = c;
    let (mut subs_b, mut subs_c, mut conns) = (vec![], vec![], vec![]);
    for _ in 0..n {
        let x = async_nats::connect(&url).await.unwrap();
        subs_b.push(x.subscribe("ev.b").await.unwrap());
        x.flush().await.unwrap();
        conns.push(x);
        let y = async_nats::connect(&url).await.unwrap();
        subs_c.push(y.subscribe("ev.c.k").await.unwrap());
        y.flush().await.unwrap();
        conns.push(y);
    }
    let hdr = "A".repeat(300);
    let ev = bytes::Bytes::from(vec![1u8; 220]);
    let (mut sa, mut sb, mut sc) = (vec![], vec![], vec![]);
    for i in 0..600u64 {
        let a = floor.sample(i).await;
        // commit then publish
        let started = Instant::now();
        let work = async {
            b.put("k", i.to_string().into()).await.unwrap();
            wc.publish("ev.b", ev.clone()).await.unwrap();
            wc.flush().await.unwrap();
            if std::env::var("MAT").is_ok() {
                let x = b.put("h", ev.clone()).await;
                let y = b.put("v", ev.clone()).await;
                x.unwrap();
                y.unwrap();
            }
        };
        let got = join_all(subs_b.iter_mut().map(|s| s.next()));
        tokio::join!(work, got);
        let bb = started.elapsed();
        // republish
        let started = Instant::now();
        let work = async {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Mycosynth-Event", hdr.as_str());
            js.publish_with_headers("$KV.cc.k", h, i.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        };
        let got = join_all(subs_c.iter_mut().map(|s| s.next()));
        tokio::join!(work, got);
        let cc = started.elapsed();
        if i >= 100 {
            sa.push(a);
            sb.push(bb);
            sc.push(cc);
        }
    }
    println!(
        "N={n} floor {} | put,ack,publish {} | republish {}",
        p50(sa),
        p50(sb),
        p50(sc)
    );
}
