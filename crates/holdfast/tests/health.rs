//! `/healthz` and `/readyz` on the publish listener: what a load balancer or a supervisor sees,
//! with publish authentication on, and while a shutdown is announced
//! (`server.shutdown_delay_secs`). The cluster bus's part of readiness is in cluster.rs.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn probes_need_no_credentials_when_the_publish_api_does() {
    let origin = grip_origin(200, &[], "served").await;
    let proxy = Proxy::routed_to(&origin, |c| {
        c.publish.token = vec!["secret-token".into()];
        quiet(c);
    })
    .await;
    let health = get(&proxy.publish_url("/healthz")).await;
    assert_eq!(health.status(), 200);
    assert_eq!(text(health).await, "ok\n");
    assert_eq!(proxy.readyz().await, (200, "ready\n".to_string()));
    // The rest of the API still wants the token.
    assert_eq!(get(&proxy.publish_url("/metrics")).await.status(), 401);
    // Only GET and HEAD are probes; anything else falls through to the authenticated API.
    let post = hyper::Request::post(proxy.publish_url("/readyz"))
        .body(full(""))
        .unwrap();
    assert_eq!(send(post).await.status(), 401);
}

#[tokio::test]
async fn a_shutdown_delay_turns_readiness_off_while_clients_are_still_served() {
    let origin = grip_origin(200, &[], "served").await;
    let mut proxy = Proxy::routed_to(&origin, |c| {
        // Longer than the test: the listeners stay open until the proxy is dropped.
        c.server.shutdown_delay_secs = 600;
        quiet(c);
    })
    .await;
    assert_eq!(proxy.readyz().await.0, 200);
    proxy.signal_shutdown();
    eventually(
        Duration::from_secs(10),
        || "readyz still 200 after the shutdown signal".to_string(),
        || async { proxy.readyz().await.0 == 503 },
    )
    .await;
    let (_, body) = proxy.readyz().await;
    assert_eq!(body, "not ready\ndraining: shutdown has begun\n");
    // New clients are still served during the delay, and the process is alive.
    assert_eq!(text(get(&proxy.url("/")).await).await, "served");
    assert_eq!(get(&proxy.publish_url("/healthz")).await.status(), 200);
}
