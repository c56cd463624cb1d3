//! What the observation cache saves (`contract/cache.rs`): a no-op plan of N managed
//! bridges (default 1000) on the real host, once observing every time (as one-shot
//! commands do) and once while the driver watches (as the controller does), where it
//! reuses its last observation. Run by `bench/plan_cache.sh`, inside a network namespace
//! that script creates (`ip netns exec`, so `nft` and `/proc` see the same namespace): it
//! creates N bridges in whatever namespace it runs in, so it is a benchmark program, not
//! a test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitvisor::contract::WatchSink;
use gitvisor::drivers::bridge::BridgeSpec;
use gitvisor::drivers::{HostSettings, PlanContext, StepContext, connect_all};
use gitvisor::model::{Kind, Metadata, Name, Resource, ResourceId, Spec};
use gitvisor::plan::Action;

fn bridge(i: usize) -> Arc<Resource> {
    let spec: BridgeSpec = serde_yaml::from_str(&format!(
        "addresses: [10.{}.{}.1/24]",
        (i / 256) % 256,
        i % 256
    ))
    .expect("spec parses");
    let name = Name::parse(&format!("gvc{i}")).expect("valid name");
    Arc::new(Resource::new(Metadata::named(name), Spec::new(spec)))
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let count: usize = std::env::var("GITVISOR_BENCH_BRIDGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let runs: usize = std::env::var("GITVISOR_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(7);
    let dirs = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let settings = HostSettings {
            run_dir: dirs.path().join("run"),
            state_dir: dirs.path().join("state"),
        };
        let drivers = connect_all(&settings).expect("drivers connect");
        let driver = drivers.get(Kind::Bridge).expect("a bridge driver");
        let desired: Vec<_> = (0..count).map(bridge).collect();
        let owned: Vec<ResourceId> = desired.iter().map(|r| r.id()).collect();
        let context = PlanContext::new(owned).with_revision(&desired);

        let changes = driver
            .plan(&desired, &PlanContext::new([]).with_revision(&desired))
            .await
            .expect("plan");
        let refs: Vec<_> = changes.iter().collect();
        driver.prepare_apply(&refs);
        for change in &changes {
            driver
                .apply(change, &StepContext::detached(change.id.clone()))
                .await
                .expect("apply");
        }

        let plan = async || {
            let started = Instant::now();
            let changes = driver.plan(&desired, &context).await.expect("plan");
            let took = started.elapsed();
            assert!(
                changes.iter().all(|c| c.action == Action::NoOp),
                "a no-op plan"
            );
            took
        };
        let mut observing = Vec::new();
        for _ in 0..runs {
            observing.push(plan().await);
        }
        let (sink, _events) = WatchSink::channel();
        let watching = driver.watch(sink).expect("the watch starts");
        println!("bridges: {}", watching.describe());
        // Let the watch settle (its first dump), then fill the cache once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        plan().await;
        let mut cached = Vec::new();
        for _ in 0..runs {
            cached.push(plan().await);
        }
        let (observing, cached) = (median(observing), median(cached));
        println!(
            "no-op plan of {count} bridges, median of {runs}: observing {:.1} ms, from the cache {:.2} ms, ratio {:.0}x",
            observing.as_secs_f64() * 1000.0,
            cached.as_secs_f64() * 1000.0,
            observing.as_secs_f64() / cached.as_secs_f64().max(1e-9)
        );
        drop(watching);
    });
}
