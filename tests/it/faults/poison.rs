//! Poison records of every kind on every input topic, in the middle of a steady load:
//! undecodable bytes, an unknown schema id, a record of another type, a truncated record and
//! a request too large to fan out. Each on a stream topic is dead-lettered with its class;
//! on a table topic it is skipped and counted; nothing else is affected.
//! (The contract's records have no recursion, so "deeply nested" has no Avro form here.)

use std::time::Duration;

use notify_runtime::now_ms;

use super::chaos::{Run, assert_clean, scaled};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_on_every_input_is_dead_lettered_and_harms_nothing_else() {
    let run = Run::start("chaos_poison", 4, scaled(20)).await;
    let env = &run.p.stack.env;
    let (stack, topics) = (&run.p.stack, &run.p.topics);
    let profile_bytes = {
        let p = notify_tests::records::profile("poison", vec![]);
        env.codec
            .encode(&topics["users"], &p)
            .await
            .expect("encode")
    };
    let request_bytes = env
        .codec
        .encode(&topics["requests"], &run.request(999_999))
        .await
        .expect("encode");
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("undecodable", b"\xff\x00not avro at all".to_vec()),
        (
            "unknown schema id",
            [&[0u8, 0x7f, 0xff, 0xff, 0xf0][..], b"\x02xx"].concat(),
        ),
        (
            "truncated",
            request_bytes[..request_bytes.len() / 2].to_vec(),
        ),
    ];
    let inputs = [
        topics["requests"].as_str(),
        topics["users"].as_str(),
        topics["templates"].as_str(),
        stack.apns.as_str(),
        stack.fcm.as_str(),
        stack.sms.as_str(),
        stack.email.as_str(),
        stack.retry.as_str(),
        stack.feedback.as_str(),
    ];
    let requests = scaled(150);
    let start = now_ms();
    // Table topics (profiles, templates, token feedback) are compacted state read by every
    // instance: a poison record there is skipped with a warning and counted, not dead-lettered
    // (each instance would dead-letter it again on every load).
    let tables = [
        topics["users"].as_str(),
        topics["templates"].as_str(),
        stack.feedback.as_str(),
    ];
    let mut poisoned = 0;
    let poison = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for topic in inputs {
            let counted = usize::from(!tables.contains(&topic));
            for (kind, bytes) in &kinds {
                env.produce_bytes(topic, Some(kind), Some(bytes), None, &[])
                    .await;
                poisoned += counted;
            }
            // A profile where something else belongs (not on the profile topic itself).
            if topic != topics["users"] {
                env.produce_bytes(topic, Some("wrong type"), Some(&profile_bytes), None, &[])
                    .await;
                poisoned += counted;
            }
        }
        // A request that fits the broker but whose channel messages (they carry its data)
        // would not: dead-lettered as a whole, not a crash loop.
        let mut big = run.request(requests);
        big.data.insert("padding".into(), "x".repeat(990_000));
        env.produce(&topics["requests"], &big.user_id, &big).await;
        poisoned += 1;
    };
    let (produced, ()) = tokio::join!(run.load(0, requests, 10.0), poison);
    let window = Some((start, now_ms()));
    let report = run.settle(produced, window, Duration::from_secs(240)).await;
    let dead: usize = report.dead_letters.values().sum();
    assert_clean("poison", &report);
    assert!(
        dead >= poisoned,
        "{dead} dead letters for {poisoned} poison records: {report:#?}"
    );
    assert!(
        run.fleet().exits.is_empty(),
        "a processor crashed on poison"
    );
}
