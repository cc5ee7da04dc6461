//! Switchyard on Redis under Sentinel.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use common::within;
use switchyard_harness::RedisSentinel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_fails_over() {
    common::init_tracing();
    let t = std::time::Instant::now();
    let mut deployment = within(60, "sentinels", RedisSentinel::start()).await.expect("start");
    println!("ready after {:?}", t.elapsed());
    let old = deployment.primary_port().await.expect("primary");
    let t = std::time::Instant::now();
    let index = deployment.kill_primary().await.expect("kill");
    let new = deployment.wait_for_new_primary(old).await.expect("failover");
    println!("failover {old} -> {new} after {:?}", t.elapsed());
    deployment.start_again(index).await.expect("restart");
}
