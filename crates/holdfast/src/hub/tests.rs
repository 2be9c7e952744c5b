//! Unit tests of the hub.
use super::*;
use crate::config::Config;

fn item(channel: &str, id: Option<&str>) -> PublishItem {
    let body = serde_json::json!({"items": [{"channel": channel, "id": id,
        "formats": {"http-stream": {"content": "x"}}}]});
    let mut items = grip::publish::parse_publish_body(body.to_string().as_bytes()).unwrap();
    items.remove(0)
}

fn hub(queue: usize) -> Hub {
    let mut config = Config::default();
    config.limits.connection_queue = queue;
    config.reliability.update_on_first_subscription = false;
    Hub::new(HubLimits::from(&config))
}

#[test]
fn channels_come_and_go_with_their_subscribers() {
    let hub = hub(10);
    let (mut a, mut rx_a) =
        hub.subscribe(vec!["x".into(), "y".into(), "x".into()], Want::HttpStream);
    assert_eq!(a.channels(), ["x", "y"]);
    let (b, _rx_b) = hub.subscribe(vec!["x".into()], Want::HttpStream);
    assert_eq!(hub.stats().channels, 2);
    assert_eq!(hub.stats().subscriptions, 3);
    assert_eq!(hub.publish(item("x", None)), 2);
    assert!(rx_a.try_recv().is_ok());
    assert!(a.remove("y"));
    assert!(!a.remove("y"));
    assert_eq!(hub.subscribers("y"), 0);
    assert!(a.add("z".into()));
    assert_eq!(hub.publish(item("z", None)), 1);
    drop(b);
    drop(a);
    assert_eq!(hub.stats().channels, 0);
    // With every channel left, the queue ends.
    assert!(rx_a.try_recv().is_ok());
    assert!(matches!(
        rx_a.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
}

#[test]
fn full_queues_drop_the_newest_item_and_count_it() {
    let hub = hub(2);
    let (_sub, mut rx) = hub.subscribe(vec!["q".into()], Want::HttpStream);
    for _ in 0..5 {
        hub.publish(item("q", None));
    }
    let stats = hub.stats();
    assert_eq!((stats.delivered, stats.dropped), (2, 3));
    assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok() && rx.try_recv().is_err());
}

#[test]
fn only_subscribers_wanting_the_format_receive_it() {
    let hub = hub(10);
    let (_s, mut response) = hub.subscribe(vec!["f".into()], Want::HttpResponse);
    let (_t, mut stream) = hub.subscribe(vec!["f".into()], Want::HttpStream);
    let (_w, mut ws) = hub.subscribe(vec!["f".into()], Want::WsMessage);
    // The item has an http-stream format only.
    assert_eq!(hub.publish(item("f", None)), 1);
    let got = stream.try_recv().expect("the stream subscriber gets it");
    assert_eq!(got.channel, "f");
    assert!(response.try_recv().is_err());
    assert!(ws.try_recv().is_err());
}

#[test]
fn duplicate_ids_are_dropped_per_channel() {
    let hub = hub(10);
    let (_s, mut rx) = hub.subscribe(vec!["d".into(), "e".into()], Want::HttpStream);
    assert_eq!(hub.publish(item("d", Some("1"))), 1);
    assert_eq!(hub.publish(item("d", Some("1"))), 0);
    assert_eq!(hub.publish(item("e", Some("1"))), 1);
    assert_eq!(hub.publish(item("d", None)), 1);
    assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 3);
}

#[test]
fn close_all_ends_every_queue() {
    let hub = hub(10);
    let (_s, mut rx) = hub.subscribe(vec!["c".into()], Want::HttpStream);
    hub.close_all();
    assert!(matches!(
        rx.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
}

fn seq_item(channel: &str, id: &str, prev: Option<&str>) -> PublishItem {
    let body = serde_json::json!({"items": [{"channel": channel, "id": id, "prev-id": prev,
        "formats": {"http-stream": {"content": id}}}]});
    grip::publish::parse_publish_body(body.to_string().as_bytes())
        .unwrap()
        .remove(0)
}

fn ids(rx: &mut mpsc::Receiver<Delivery>) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|d| d.id.clone())
        .collect()
}

#[tokio::test]
async fn reordered_items_are_delivered_in_order() {
    let hub = hub(100);
    let (_s, mut rx) = hub.subscribe(vec!["r".into()], Want::HttpStream);
    hub.publish(seq_item("r", "1", None));
    hub.publish(seq_item("r", "3", Some("2")));
    hub.publish(seq_item("r", "4", Some("3")));
    assert_eq!(ids(&mut rx), ["1"]);
    hub.publish(seq_item("r", "2", Some("1")));
    assert_eq!(ids(&mut rx), ["2", "3", "4"]);
    assert_eq!(hub.last_id("r").as_deref(), Some("4"));
}

#[tokio::test(start_paused = true)]
async fn a_missing_predecessor_is_given_up_after_the_wait() {
    let hub = hub(100);
    let (_s, mut rx) = hub.subscribe(vec!["w".into()], Want::HttpStream);
    hub.publish(seq_item("w", "1", None));
    hub.publish(seq_item("w", "3", Some("2")));
    assert_eq!(ids(&mut rx), ["1"]);
    tokio::time::sleep(Duration::from_millis(5001)).await;
    assert_eq!(rx.recv().await.unwrap().id.as_deref(), Some("3"));
}

#[tokio::test]
async fn no_seq_items_skip_the_sequencer() {
    let hub = hub(100);
    let (_s, mut rx) = hub.subscribe(vec!["n".into()], Want::HttpStream);
    hub.publish(seq_item("n", "1", None));
    let mut item = seq_item("n", "9", Some("8"));
    item.no_seq = true;
    hub.publish(item);
    assert_eq!(ids(&mut rx), ["1", "9"]);
}

#[tokio::test]
async fn resuming_replays_history_or_reports_stale() {
    let hub = hub(100);
    for (id, prev) in [("a", None), ("b", Some("a")), ("c", Some("b"))] {
        hub.publish(seq_item("h", id, prev));
    }
    let (_s, mut rx, resumes) = hub.subscribe_resuming(
        vec![
            ("h".into(), Some("a".into())),
            ("other".into(), Some("x".into())),
        ],
        Want::HttpStream,
    );
    let Resume::Replay(items) = &resumes[0] else {
        panic!("expected replay, got {:?}", resumes[0]);
    };
    let got: Vec<_> = items.iter().map(|i| i.id.clone().unwrap()).collect();
    assert_eq!(got, ["b", "c"]);
    assert!(
        matches!(resumes[1], Resume::Live),
        "unknown channel: nothing to compare"
    );
    hub.publish(seq_item("h", "d", Some("c")));
    assert_eq!(
        ids(&mut rx),
        ["d"],
        "live items follow the replay without overlap"
    );

    let (_s2, _rx2, resumes) =
        hub.subscribe_resuming(vec![("h".into(), Some("zzz".into()))], Want::HttpStream);
    assert!(matches!(&resumes[0], Resume::Stale { last_id: Some(l) } if l == "d"));
    let (_s3, _rx3, resumes) =
        hub.subscribe_resuming(vec![("h".into(), Some("d".into()))], Want::HttpStream);
    assert!(matches!(resumes[0], Resume::Live));
}

#[test]
fn history_is_bounded_by_count_and_bytes() {
    let mut config = Config::default();
    config.reliability.history_items = 3;
    let hub = Hub::new(HubLimits::from(&config));
    for i in 0..10 {
        hub.publish(seq_item("b", &i.to_string(), None));
    }
    let (_s, _rx, resumes) =
        hub.subscribe_resuming(vec![("b".into(), Some("7".into()))], Want::HttpStream);
    assert!(matches!(&resumes[0], Resume::Replay(v) if v.len() == 2));
    let (_s, _rx, resumes) =
        hub.subscribe_resuming(vec![("b".into(), Some("6".into()))], Want::HttpStream);
    assert!(matches!(resumes[0], Resume::Stale { .. }), "6 was evicted");

    config.reliability.history_items = 1000;
    config.reliability.history_max_bytes = 4000;
    let hub = Hub::new(HubLimits::from(&config));
    for i in 0..100 {
        hub.publish(seq_item(&format!("c{}", i % 7), &i.to_string(), None));
    }
    assert!(hub.stats().history_bytes <= 4000, "{:?}", hub.stats());
    assert!(hub.stats().history_bytes > 0);
}

#[test]
fn history_off_keeps_no_state_for_unsubscribed_channels() {
    let mut config = Config::default();
    config.reliability.history_items = 0;
    let hub = Hub::new(HubLimits::from(&config));
    hub.publish(seq_item("o", "1", None));
    assert_eq!(hub.stats().channel_states, 0);
    assert_eq!(hub.last_id("o"), None);
}

#[tokio::test]
async fn recover_forgets_last_ids_and_hints_http_sessions() {
    let hub = hub(100);
    let (_s, mut rx) = hub.subscribe(vec!["rc".into()], Want::HttpStream);
    let (_w, mut ws) = hub.subscribe(vec!["rc".into()], Want::WsMessage);
    hub.publish(seq_item("rc", "1", None));
    hub.publish(seq_item("rc", "3", Some("2")));
    assert_eq!(hub.recover(), 1);
    let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(got.len(), 3, "1, the released 3, and the hint");
    assert_eq!(
        got[2].formats.http_stream.as_ref().unwrap().action,
        Action::Hint
    );
    assert!(ws.try_recv().is_err());
    assert_eq!(hub.last_id("rc"), None);
}

#[tokio::test(start_paused = true)]
async fn first_subscriber_gets_one_update_hint() {
    let hub = Hub::new(HubLimits::from(&Config::default()));
    let (_s, mut rx) = hub.subscribe(vec!["fs".into()], Want::HttpResponse);
    let (_s2, mut rx2) = hub.subscribe(vec!["fs".into()], Want::HttpResponse);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for rx in [&mut rx, &mut rx2] {
        let hint = rx.try_recv().expect("hint after a second");
        assert_eq!(
            hint.formats.http_response.as_ref().unwrap().action,
            Action::Hint
        );
        assert!(rx.try_recv().is_err(), "only once");
    }
}

#[test]
fn sweep_removes_idle_channels_only_after_linger() {
    let hub = hub(10);
    let (s, _rx) = hub.subscribe(vec!["sw".into()], Want::HttpStream);
    drop(s);
    hub.sweep();
    assert_eq!(
        hub.stats().channel_states,
        1,
        "lingers after its last subscriber"
    );
    assert_eq!(hub.stats().channels, 0);
    hub.sweep_at(Instant::now() + LINGER - Duration::from_secs(1));
    assert_eq!(hub.stats().channel_states, 1, "still within the linger");
    hub.sweep_at(Instant::now() + LINGER + Duration::from_secs(1));
    assert_eq!(
        hub.stats().channel_states,
        0,
        "removed once the linger is over"
    );
}

#[test]
fn overview_counts_modes_and_keeps_only_the_busiest_channels() {
    let hub = hub(10);
    let mut subs = Vec::new();
    // Channel c<n> gets n subscribers, for n in 1..=5; one of c5's is a WebSocket.
    for n in 1..=5 {
        for i in 0..n {
            let want = if n == 5 && i == 0 {
                Want::WsMessage
            } else {
                Want::HttpStream
            };
            subs.push(hub.subscribe(vec![format!("c{n}")], want));
        }
    }
    subs.push(hub.subscribe(vec!["c1".into()], Want::HttpResponse));
    let o = hub.overview(3);
    assert_eq!((o.long_polls, o.streams, o.websockets), (1, 14, 1));
    assert_eq!((o.stats.channels, o.stats.subscriptions), (5, 16));
    assert_eq!(o.stats, hub.stats());
    assert_eq!(
        o.busiest,
        [
            ("c5".to_string(), 5),
            ("c4".to_string(), 4),
            ("c3".to_string(), 3)
        ]
    );
    assert!(hub.overview(0).busiest.is_empty());
    drop(subs);
    let o = hub.overview(3);
    assert_eq!((o.long_polls, o.streams, o.websockets), (0, 0, 0));
    assert!(o.busiest.is_empty() && o.stats.subscriptions == 0);
}
