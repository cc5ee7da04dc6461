//! The harness's NATS cluster against real nats-server processes: it forms, survives the loss of
//! one node, and takes the node back on the same ports.

use std::time::Instant;

use switchyard_harness::{HarnessError, NatsCluster};

#[tokio::test]
async fn a_three_node_cluster_forms_loses_a_node_and_takes_it_back() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await.expect("cluster starts");
    eprintln!("cluster formed in {:?}", started.elapsed());
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    assert_eq!(cluster.url(), urls.join(","));
    let names: Vec<String> = (0..3)
        .map(|i| cluster.node(i).expect("node").server_name().to_owned())
        .collect();
    assert_eq!(cluster.index_of(&names[2]), Some(2));

    cluster.kill(1).expect("kill node 1");
    assert!(cluster.node(1).expect("node 1").pid().is_none());
    // The two others still form a cluster with a meta leader (a quorum of 2 of 3).
    cluster
        .wait_formed()
        .await
        .expect("two nodes keep a meta leader");

    cluster.start_again(1).await.expect("node 1 rejoins");
    assert_eq!(cluster.urls(), urls, "same client ports after the restart");
    cluster.restart(0).await.expect("node 0 restarts");

    assert!(matches!(
        cluster.kill(3),
        Err(HarnessError::NoSuchNode { index: 3, size: 3 })
    ));
    assert!(matches!(
        NatsCluster::start(0).await,
        Err(HarnessError::InvalidClusterSize { size: 0 })
    ));
}
