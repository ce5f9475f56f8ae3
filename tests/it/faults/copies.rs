//! The same event id sent 10 times at once from several producers (the project's partitioner,
//! librdkafka's CRC32 default, the Java client's murmur2), with the chain SIGKILLed in the
//! middle: each request delivered once, and DUPLICATE only for the copies really sent.

use std::time::Duration;

use notify_runtime::now_ms;

use super::chaos::{Run, assert_clean, scaled};

const COPIES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_copies_from_three_producers_are_delivered_once() {
    let run = Run::start("chaos_copies", 4, scaled(20)).await;
    let events = scaled(40);
    let start = now_ms();
    let env = &run.p.stack.env;
    let topic = &run.p.topics["requests"];
    let send_copies = async {
        for n in 0..events {
            let r = run.request(n);
            let sends = (0..COPIES).map(|c| {
                let r = r.clone();
                async move {
                    match c % 3 {
                        0 => env.produce(topic, &r.user_id, &r).await,
                        1 => {
                            env.produce_partitioned("consistent_random", topic, &r.user_id, &r)
                                .await;
                        }
                        _ => {
                            env.produce_partitioned("murmur2_random", topic, &r.user_id, &r)
                                .await;
                        }
                    }
                }
            });
            futures::future::join_all(sends).await;
            if n == events / 2 {
                let mut fleet = run.fleet();
                let chain = fleet.of(notify_chain::NAME)[0];
                fleet.kill(chain);
                fleet.spawn(notify_chain::NAME, &[]);
                eprintln!("SIGKILL chain");
            }
        }
    };
    send_copies.await;
    let produced = (0..events).map(|n| run.produced(n, COPIES)).collect();
    let report = run
        .settle(produced, Some((start, now_ms())), Duration::from_secs(240))
        .await;
    assert_clean("copies", &report);
}
