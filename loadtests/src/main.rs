//! Placeholder: the throughput and latency benchmarks land with the load-test issue.
fn main() {
    println!("loadtests: no benchmarks yet; see README 'Roadmap'");
}
