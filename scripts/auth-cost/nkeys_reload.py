# Measures nkeys users in the nats-server configuration with a reload per added user. See
# BENCHMARKS.md "Adding identities" for how to run it and the figures.
"""nkeys users in the server config + SIGHUP reload: config size, reload latency, reload CPU, survival of existing connections."""
import asyncio, os, re, signal, sys, time, json, urllib.request
import datetime
import nacl.signing, nkeys, nats
from common import *

W = os.environ.get("NKEYS_DIR", "/tmp/switchyard-auth-cost/nkeys")
REPS = int(os.environ.get("REPS", 5))
K_EXISTING = int(os.environ.get("K_EXISTING", 50))

def new_user():
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(seed).public_key.decode()

def user_block(pub, i):
    # the same subjects the agent role's JWT permission template grants, with {{name()}} expanded
    p = ",".join(f'"coord.{s}.{i}"' for s in ["agent_register", "agent_deregister", "task_complete", "heartbeat",
                 "grant_ack", "handoff_initiate", "handoff_acknowledge", "resource_request"])
    p += ',"coord.status_query","$JS.API.STREAM.INFO.*"'
    s = f'"coord.task_request.{i}","coord.reply.{i}","coord.error_report.{i}","_INBOX_agent.{i}.>"'
    return (f'  {{nkey: {pub}, permissions: {{publish: {{allow: [{p}]}}, subscribe: {{allow: [{s}]}}, '
            f'allow_responses: {{max: 1}}}}}}\n')

def write_conf(path, port, users, observer_pub):
    body = "".join(user_block(pub, i) for i, (_, pub) in users.items())
    txt = (f'port: {port}\nlogtime: true\njetstream {{store_dir: "{W}/js"}}\nauthorization {{\n users = [\n'
           f'  {{nkey: {observer_pub}}}\n{body} ]\n}}\n')
    tmp = path + ".tmp"; open(tmp, "w").write(txt); os.replace(tmp, path)   # atomic, so a reload never reads half a file
    return len(txt)

async def _quiet(e): pass

async def connect(seed, i, port, **kw):
    kw.setdefault("error_cb", _quiet)
    return await nats.connect(f"nats://127.0.0.1:{port}", nkeys_seed_str=seed, inbox_prefix=f"_INBOX_agent.{i}",
                              allow_reconnect=False, connect_timeout=2, **kw)

def connz_cids(mport):
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/connz?limit=100000", timeout=5) as r:
        return {c["cid"] for c in json.load(r)["connections"]}

async def run(N):
    os.makedirs(W, exist_ok=True)
    users = {f"a{k}": new_user() for k in range(N)}
    obs_seed, obs_pub = new_user()
    port, mport = free_port(), free_port()
    conf = f"{W}/server-{N}.conf"
    size = write_conf(conf, port, users, obs_pub)
    t = time.perf_counter(); log = f"{W}/server-{N}.log"
    srv = start_server(conf, mport, log); start_s = time.perf_counter() - t
    rss0 = varz(mport)["mem"]
    got = []
    obs = await nats.connect(f"nats://127.0.0.1:{port}", nkeys_seed_str=obs_seed)
    async def on_hb(m): got.append(m.subject)
    await obs.subscribe("coord.heartbeat.*", cb=on_hb); await obs.flush()
    drops = []
    async def dc(): drops.append(time.time())
    existing = [await connect(users[f"a{k}"][0], f"a{k}", port, disconnected_cb=dc) for k in range(K_EXISTING)]
    for k, c in enumerate(existing): await c.subscribe(f"coord.task_request.a{k}")
    cids0 = connz_cids(mport)
    v = varz(mport); print(f"N={N:>6}: {K_EXISTING} users connected: rss {v['mem']/2**20:.1f} MiB, conns {v['connections']}, subs {v['subscriptions']}", flush=True)
    lat, cpu, polls, gen, logged, anomalies = [], [], [], [], [], []
    for r in range(REPS):
        i = f"new{r}"
        tg = time.perf_counter(); users[i] = new_user(); write_conf(conf, port, users, obs_pub); gen.append(time.perf_counter() - tg)
        c0 = cpu_seconds(srv.pid); w0 = time.time(); t0 = time.perf_counter(); n = 0
        os.kill(srv.pid, signal.SIGHUP)          # same as: nats-server --signal reload=<pid>
        while True:
            n += 1
            try:
                nc = await connect(users[i][0], i, port)
            except Exception:
                if time.perf_counter() - t0 > 30: raise
                continue
            try:
                # accepted only once a publish round-trips; a connection let in mid-reload has been seen to hang
                await nc.publish(f"coord.heartbeat.{i}", b"hb"); await nc.flush(timeout=2); break
            except Exception as e:
                anomalies.append(f"{i}: connected at {(time.perf_counter()-t0)*1000:.0f} ms but flush failed: {e!r}")
                try: await nc.close()
                except Exception: pass
        lat.append(time.perf_counter() - t0); polls.append(n)
        await nc.close()
        await asyncio.sleep(1.0)                 # let the reload finish completely before reading CPU
        cpu.append(cpu_seconds(srv.pid) - c0)
        # signal -> the server's own "Reloaded server configuration" log line (microsecond timestamps, UTC)
        ts = re.findall(r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) \[INF\] Reloaded server configuration", open(log).read())[-1]
        done = datetime.datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
        logged.append(done - w0)
    # quiet pass: no polling clients, so the server CPU and log latency are the reload's alone
    qlog, qcpu = [], []
    for r in range(REPS):
        i = f"quiet{r}"; users[i] = new_user(); write_conf(conf, port, users, obs_pub)
        before = len(re.findall("Reloaded server configuration", open(log).read()))
        c0 = cpu_seconds(srv.pid); w0 = time.time()
        os.kill(srv.pid, signal.SIGHUP)
        while len(re.findall("Reloaded server configuration", open(log).read())) == before:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0); qcpu.append(cpu_seconds(srv.pid) - c0)
        ts = re.findall(r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) \[INF\] Reloaded server configuration", open(log).read())[-1]
        qlog.append(datetime.datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp() - w0)
    print(f"N={N:>6} quiet reloads: SIGHUP->'Reloaded' median {med(qlog)*1000:.1f} ms (all {[round(x*1000) for x in qlog]}), "
          f"server CPU per reload median {med(qcpu)*1000:.0f} ms (all {[round(x*1000) for x in qcpu]})", flush=True)
    # do the pre-existing connections still work after REPS reloads?
    got.clear()
    for k, c in enumerate(existing): await c.publish(f"coord.heartbeat.a{k}", b"hb")
    await asyncio.gather(*(c.flush() for c in existing)); await asyncio.sleep(0.5)
    survived = len(cids0 - connz_cids(mport)) == 0
    reloads = len(re.findall("Reloaded server configuration", open(log).read()))
    rss1 = varz(mport)["mem"]
    print(f"N={N:>6}: conf {size/1024:8.0f} KiB | start {start_s*1000:6.0f} ms | rss {rss0/2**20:5.1f}->{rss1/2**20:5.1f} MiB | "
          f"rewrite conf median {med(gen)*1000:5.0f} ms | SIGHUP->new user connected median {med(lat)*1000:6.0f} ms "
          f"(min {min(lat)*1000:.0f}, max {max(lat)*1000:.0f}, polls {polls}) | SIGHUP->'Reloaded' log line median {med(logged)*1000:6.1f} ms | server CPU per reload median {med(cpu)*1000:5.0f} ms "
          f"(all {[round(x*1000) for x in cpu]}) | reloads logged {reloads} | {K_EXISTING} existing conns kept cid: {survived}, "
          f"disconnects {len(drops)}, heartbeats after reloads {len(got)}/{K_EXISTING} | anomalies {anomalies}", flush=True)
    for c in existing: await c.close()
    await obs.close(); srv.terminate(); srv.wait()

async def main():
    for N in [int(x) for x in sys.argv[1:]]:
        await run(N)

asyncio.run(main())
