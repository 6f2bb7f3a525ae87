// One run of BullMQ: a worker process with CONCURRENCY slots, then JOBS jobs added with
// Queue.addBulk (1,000 a call) while it runs, timed until the counter says the last one
// is done. Then SAMPLES jobs (default 100) one at a time on the idle worker, each timed on
// this process's clock from just before its add until the job's mark (an RPUSH) arrives. Prints one JSON line, as the other peers do.
//
//   node peer.mjs JOBS CONCURRENCY [SAMPLES]   (the harness)
//   node peer.mjs --worker CONCURRENCY    (the worker it starts)
import { Queue, Worker } from 'bullmq';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const url = new URL(process.env.PEER_REDIS_URL ?? 'redis://127.0.0.1:6379/1');
const connection = { host: url.hostname, port: Number(url.port || 6379), db: Number(url.pathname.slice(1) || 0) };
const COUNTER = 'peer:done';
const PICKUP = 'peer:pickup';

if (process.argv[2] === '--worker') {
  const concurrency = Number(process.argv[3]);
  const worker = new Worker('peers', async (job) => {
    const client = await worker.client;
    if (job.name === 'stamp') await client.rpush(PICKUP, 1);
    else await client.incr(COUNTER);
  }, { connection, concurrency, removeOnComplete: { count: 0 } });
  await worker.waitUntilReady();
  console.log('ready');
} else {
  const jobs = Number(process.argv[2]);
  const concurrency = Number(process.argv[3]);
  const queue = new Queue('peers', { connection });
  const redis = await queue.client;
  await redis.flushdb();
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--worker', String(concurrency)],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((ok) => child.stdout.once('data', ok));
  const t0 = performance.now();
  for (let start = 0; start < jobs; start += 1000) {
    const n = Math.min(1000, jobs - start);
    await queue.addBulk(Array.from({ length: n }, () => ({ name: 'incr', data: {}, opts: { removeOnComplete: true } })));
  }
  const tEnq = (performance.now() - t0) / 1000;
  const deadline = Date.now() + 600_000;
  while (Number(await redis.get(COUNTER) ?? 0) < jobs) {
    if (Date.now() > deadline) throw new Error('BullMQ: not done after 600 s');
    await new Promise((ok) => setTimeout(ok, 5));
  }
  const tAll = (performance.now() - t0) / 1000;
  const samples = Number(process.argv[4] ?? 100);
  const lat = [];
  const waiter = redis.duplicate();
  for (let i = 0; i < samples; i++) {
    const t = performance.now();
    await queue.add('stamp', {}, { removeOnComplete: true });
    if (!await waiter.blpop(PICKUP, 60)) throw new Error('BullMQ: a pickup job did not start within 60 s');
    lat.push(performance.now() - t);
  }
  lat.sort((a, b) => a - b);
  const pct = (p) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p / 100))];
  waiter.disconnect();
  child.kill();
  await queue.close();
  console.log(JSON.stringify({ peer: `bullmq 1 worker x ${concurrency}`, jobs, enqueue_per_s: jobs / tEnq, drain_per_s: jobs / tAll,
    pickup_p50_ms: pct(50), pickup_p99_ms: pct(99) }));
  process.exit(0);
}
