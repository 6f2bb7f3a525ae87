# One run of Sidekiq: a `sidekiq` process (basic fetch, or with RELIABLE=1 the reliable
# fetch of gitlab-sidekiq-fetcher), then JOBS jobs pushed with Sidekiq::Client.push_bulk
# (1,000 a call) while it runs, timed until the counter says the last one is done.
# Then SAMPLES jobs (default 100) one at a time on the idle workers, each timed on this
# process's clock from just before its push until the job's mark (an RPUSH) arrives. Prints one JSON line, as the other peers do.
#
#   ruby peer.rb JOBS CONCURRENCY [SAMPLES]
require 'json'
require 'redis'
require 'sidekiq'
require_relative 'job'

# Sidekiq 6.4 calls redis-rb 4.8's deprecated SADD form on every push.
Redis.silence_deprecations = true

jobs = Integer(ARGV[0])
concurrency = Integer(ARGV[1])
samples = Integer(ARGV[2] || 100)
reliable = ENV['RELIABLE'] == '1'
url = ENV.fetch('PEER_REDIS_URL', 'redis://127.0.0.1:6379/1')
redis = Redis.new(url: url)
redis.flushdb
Sidekiq.configure_client { |c| c.redis = { url: url } }

env = { 'PEER_REDIS_URL' => url, 'RELIABLE' => reliable ? '1' : '0' }
pid = spawn(env, 'sidekiq', '-r', File.join(__dir__, 'job.rb'), '-c', concurrency.to_s, '-q', 'default',
            out: File::NULL, err: File::NULL)
deadline = Time.now + 60
sleep 0.05 until redis.scard('processes').positive? || Time.now > deadline
raise 'sidekiq did not come up' unless redis.scard('processes').positive?

t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
(0...jobs).step(1000) do |start|
  n = [1000, jobs - start].min
  Sidekiq::Client.push_bulk('class' => IncrJob, 'args' => Array.new(n) { [] })
end
t_enq = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
deadline = Time.now + 600
sleep 0.005 while redis.get(IncrJob::COUNTER).to_i < jobs && Time.now < deadline
raise "sidekiq: not done after 600 s" if redis.get(IncrJob::COUNTER).to_i < jobs
t_all = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
lat = Array.new(samples) do
  t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  Sidekiq::Client.push('class' => StampJob, 'args' => [])
  raise 'sidekiq: a pickup job did not start within 60 s' unless redis.blpop(StampJob::PICKUP, timeout: 60)
  (Process.clock_gettime(Process::CLOCK_MONOTONIC) - t) * 1000
end.sort
pct = ->(p) { lat[[lat.size - 1, lat.size * p / 100].min] }
Process.kill('TERM', pid)
Process.wait(pid)
fetch = reliable ? 'reliable fetch' : 'basic fetch'
puts JSON.generate(peer: "sidekiq #{fetch} x #{concurrency}", jobs: jobs, enqueue_per_s: jobs / t_enq,
                   drain_per_s: jobs / t_all, pickup_p50_ms: pct.call(50), pickup_p99_ms: pct.call(99))
