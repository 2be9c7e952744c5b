//! Connection limits and timeouts: what a client, an origin or a publisher that misbehaves at
//! the connection level gets, and that everyone else keeps being served meanwhile.
//!
//! Timeouts are configured short (1 s) and the tests wait, with a generous bound, for what a
//! user would see: the connection closed, `400`, `408`, `431`, `504`.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn idle_pooled_origin_connections_are_closed() {
    let origin = grip_origin(200, &[], "pooled").await;
    let proxy = Proxy::routed_to(&origin, |c| c.timeouts.origin_idle_secs = 1).await;
    assert_eq!(text(get(&proxy.url("/")).await).await, "pooled");
    // The client's connection has closed; the pooled origin connection must go too.
    eventually(
        Duration::from_secs(10),
        || format!("descriptors in use: {}", proxy.app.descriptors.in_use()),
        || async { proxy.app.descriptors.in_use() == 0 },
    )
    .await;
}
