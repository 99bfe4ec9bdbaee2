//! The server's side services: gRPC health reports the rollout service as serving.

use crate::common::Harness;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_rollout_service_as_serving() {
    let h = Harness::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", h.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "steerer.v1.RolloutService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);
}
