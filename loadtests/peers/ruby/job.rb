# Sidekiq's jobs: INCR a counter (the drain), and push a mark the enqueuer waits for (the
# pickup latency, timed on the enqueuer's clock). Loaded by `sidekiq -r` and by peer.rb.
require 'sidekiq'

URL = ENV.fetch('PEER_REDIS_URL', 'redis://127.0.0.1:6379/1')
Sidekiq.configure_server do |config|
  config.redis = { url: URL }
  if ENV['RELIABLE'] == '1'
    require 'sidekiq-reliable-fetch'
    Sidekiq::ReliableFetch.setup_reliable_fetch!(config)
  end
end

class IncrJob
  include Sidekiq::Worker
  COUNTER = 'peer:done'.freeze

  def perform
    Sidekiq.redis { |r| r.incr(COUNTER) }
  end
end

class StampJob
  include Sidekiq::Worker
  PICKUP = 'peer:pickup'.freeze

  def perform
    Sidekiq.redis { |r| r.rpush(PICKUP, 1) }
  end
end
